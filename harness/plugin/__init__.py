"""The harness's pytest plugin: options, fixtures, markers, header and JUnit facts.

Loaded by name through the ``pytest11`` entry point (``harness.entry_point``), the checkout's
conftest.py, or ``-p harness.plugin``; pytest registers it once whichever routes are active.
Each part registers its own options and keeps its state in ``config.stash``:

- ``options``: ``--devices``, ``--dp-impl``, ``--ddp-impl``; the process environment;
- ``profile``: ``--profile`` (a name, a path or ``auto``), ``--acceptance``, ``required_check``;
- ``node``: ``--fake-node``, NVML, the node's GPUs; ``node_report``: them in header and JUnit;
- ``figures``: recording and judging measured figures;
- ``fixtures``: the devices and DataParallel implementation under test;
- ``rank_tests`` and ``on_rank``: tests on the rank pool or torchrun ranks;
- ``models``: ``--model``, the user's models in place of the zoo; ``verdict``: their verdict;
- ``memory``: the memory suites' options;
- ``header``: the report header; ``junit``: the one place touching pytest's junitxml;
- ``hooks``: the hooks this plugin declares.
"""

pytest_plugins = [
    "harness.plugin.options",
    "harness.plugin.node",
    "harness.plugin.profile",
    "harness.plugin.figures",
    "harness.plugin.fixtures",
    "harness.plugin.header",
    "harness.plugin.junit",
    "harness.plugin.rank_tests",
    "harness.plugin.models",
    "harness.plugin.verdict",
    "harness.plugin.memory",
    "harness.plugin.node_report",
]
