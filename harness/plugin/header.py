"""The lines pytest prints under its own header: what is tested, on what."""

import pytest

import harness
from harness.devices import DeviceSet
from harness.environment import host_facts
from harness.plugin.node_report import devices_under_test, node_facts
from harness.plugin.options import ddp_impl_key, devices_key, dp_impl_key
from harness.plugin.profile import header_line


def pytest_report_header(config: pytest.Config) -> list[str]:
    devices = config.stash[devices_key]
    host = host_facts()
    versions = ", ".join(f"{name} {version}" for name, version in host.versions().items())
    return [
        f"gpu harness {harness.__version__} on {host.hostname}",
        f"devices: {devices.label} ({describe(config, devices)})",
        f"dp-impl: {config.stash[dp_impl_key].name}",
        f"ddp-impl: {config.stash[ddp_impl_key].name}",
        versions,
        node_facts(config).line(),
        *filter(None, [header_line(config)]),
    ]


def describe(config: pytest.Config, devices: DeviceSet) -> str:
    """What the devices are: ``4 virtual CPU devices``, or each GPU's label in replica order."""
    if devices.kind == "cpu":
        return f"{devices.count} virtual CPU device{'s' if devices.count > 1 else ''}"
    labels = {gpu.cuda_index: gpu.label for gpu in devices_under_test(config)}
    return "; ".join(labels[index] for index in devices.device_ids)
