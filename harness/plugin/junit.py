"""JUnit: the one place that reaches into pytest's junitxml plugin and tells an xdist worker
from the process that writes the file.

Per-test properties go through ``item.user_properties``, which test reports carry back from
pytest-xdist workers. Suite properties are collected once, at session start, from every
implementation of ``pytest_harness_suite_properties`` (``harness.plugin.hooks``) and added by
the process that writes the file. Names come from ``harness.properties``.
"""

import pytest
from _pytest.junitxml import xml_key

import harness
from harness import properties
from harness.environment import host_facts, recorded_environment
from harness.plugin.options import ddp_impl_key, devices_key, dp_impl_key


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from harness.plugin import hooks

    pluginmanager.add_hookspecs(hooks)


def xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (which writes no JUnit file)."""
    return hasattr(config, "workerinput")


def writes_junit(config: pytest.Config) -> bool:
    """Whether this process writes the run's JUnit file."""
    return config.stash.get(xml_key, None) is not None and not xdist_worker(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if not writes_junit(config):
        return
    xml = config.stash[xml_key]
    for added in config.hook.pytest_harness_suite_properties(config=config):
        for name, value in added:
            xml.add_global_property(name, value)


def add_suite_properties(config: pytest.Config, found: list[properties.Property]) -> None:
    """Suite properties known only at the end of the run (a verdict); call before junitxml's
    own ``pytest_sessionfinish`` writes the file."""
    if writes_junit(config):
        for name, value in found:
            config.stash[xml_key].add_global_property(name, value)


@pytest.hookimpl(tryfirst=True)
def pytest_harness_suite_properties(config: pytest.Config) -> list[properties.Property]:
    """Host, what is under test, stack versions, the environment that changes measurements."""
    host = host_facts()
    return [
        (properties.HOST, host.hostname),
        (properties.DEVICES, config.stash[devices_key].label),
        (properties.DP_IMPL, config.stash[dp_impl_key].name),
        (properties.DDP_IMPL, config.stash[ddp_impl_key].name),
        *host.versions().items(),
        (properties.HARNESS, harness.__version__),
        *recorded_environment(),
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # At collection rather than setup, so a rerun of a test does not repeat its properties.
    devices = config.stash[devices_key].label
    dp_impl = config.stash[dp_impl_key].name
    ddp_impl = config.stash[ddp_impl_key].name
    for item in items:
        item.user_properties += [(properties.DEVICES, devices), (properties.DP_IMPL, dp_impl)]
        if runs_ddp(item):
            item.user_properties.append((properties.DDP_IMPL, ddp_impl))


def runs_ddp(item: pytest.Item) -> bool:
    """Whether a test runs the ``--ddp-impl`` implementation: it is marked ``distributed``
    or uses the ``dist_env`` fixture."""
    return item.get_closest_marker("distributed") is not None or "dist_env" in getattr(
        item, "fixturenames", ()
    )
