"""The hooks the harness's plugin declares, for its own parts and for plugins that extend it."""

import pytest

from harness.properties import Property


def pytest_harness_suite_properties(config: pytest.Config) -> list[Property]:
    """JUnit suite properties to add: (name, value) pairs, names from ``harness.properties``.

    Called once per run, at session start, in the process that writes the JUnit file (not in
    pytest-xdist workers) and only when ``--junitxml`` is given; every implementation's pairs
    are added, in hook-call order. ``harness.plugin.junit`` is the one caller.
    """
