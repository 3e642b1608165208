"""The harness's pytest plugin: ``--devices``, ``--dp-impl``, fixtures, header and JUnit facts.

Loaded by name through the ``pytest11`` entry point (``harness.entry_point``), the checkout's
conftest.py, or ``-p harness.plugin``; pytest registers it once whichever routes are active.
"""

import os

# Set before anything initialises CUDA, so GPU indices follow PCI bus order as in
# nvidia-smi rather than CUDA's fastest-first order.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

pytest_plugins = [
    "harness.plugin.options",
    "harness.plugin.profile",
    "harness.plugin.fixtures",
    "harness.plugin.header",
    "harness.plugin.junit",
    "harness.plugin.rank_tests",
    "harness.plugin.node",
    "harness.plugin.memory",
    "harness.plugin.node_report",
]
