"""``--profile auto``: the shipped profile of the node's GPU model and count, exactly one, and a
node that lost GPUs is never taken for a smaller one."""

import types
from pathlib import Path

import pytest

from harness.hardware.pci import nvidia_gpus_on_pci
from harness.plugin import profile as plugin
from harness.plugin.node import NoNvml
from harness.profiles import (
    NodeModels,
    ProfileError,
    choose_profile,
    load_profile,
    load_shipped_profiles,
)

H100 = "NVIDIA H100 80GB HBM3"
SHIPPED = load_shipped_profiles()


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        ((H100,) * 8, "h100-sxm-8x"),
        ((H100,), "h100-1x"),
        (("NVIDIA H200",), "h200-1x"),
        (("NVIDIA H200",) * 8, "h200-sxm-8x"),
        ((), "cpu-virtual"),
    ],
)
def test_the_profile_of_the_nodes_model_and_count(names, chosen):
    assert choose_profile(NodeModels(names, "NVML"), SHIPPED).name == chosen


def test_no_match_names_the_node_every_profile_and_the_one_expecting_more():
    with pytest.raises(ProfileError) as info:
        choose_profile(NodeModels((H100,) * 7, "fake-node x.json"), SHIPPED)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "--profile auto: no shipped profile matches: this node has 7x NVIDIA H100 80GB HBM3 "
        "(fake-node x.json) (h100-sxm-8x expects 8: a GPU missing?"
    )
    assert "h100-1x expects" not in message  # fewer GPUs than the node: no hint
    assert "; shipped: cpu-virtual (no GPU), h100-1x (1x /H100 80GB HBM3/), " in message


def test_a_mixed_node_or_another_model_matches_nothing():
    for names in ((H100, "NVIDIA H200"), ("NVIDIA A100-SXM4-80GB",) * 8):
        with pytest.raises(ProfileError, match="no shipped profile matches"):
            choose_profile(NodeModels(names, "NVML"), SHIPPED)


def test_several_matches_are_refused():
    twice = [load_profile("h200-1x"), load_profile("h200-1x")]
    with pytest.raises(ProfileError, match="several shipped profiles match: h200-1x, h200-1x"):
        choose_profile(NodeModels(("NVIDIA H200",), "NVML"), twice)


def test_nvml_must_see_what_the_pci_bus_lists():
    # Seven of eight GPUs fallen off the bus must not make a one-GPU node that passes.
    with pytest.raises(ProfileError) as info:
        choose_profile(NodeModels((H100,), "NVML", pci_gpus=8), SHIPPED)
    assert "the PCI bus lists 8 NVIDIA GPU(s) but NVML 1" in str(info.value)
    assert choose_profile(NodeModels((H100,), "NVML", pci_gpus=1), SHIPPED).name == "h100-1x"


def device(root: Path, address: str, vendor: str, kind: str) -> None:
    folder = root / address
    folder.mkdir(parents=True)
    (folder / "vendor").write_text(f"{vendor}\n")
    (folder / "class").write_text(f"{kind}\n")


def test_the_pci_bus_counts_nvidia_display_controllers_only(tmp_path):
    device(tmp_path, "0000:18:00.0", "0x10de", "0x030200")  # an H100: 3D controller
    device(tmp_path, "0000:2a:00.0", "0x10de", "0x030000")  # a VGA GPU
    device(tmp_path, "0000:2a:00.1", "0x10de", "0x040300")  # its audio function
    device(tmp_path, "0000:c0:00.0", "0x10de", "0x068000")  # an NVSwitch
    device(tmp_path, "0000:00:00.0", "0x8086", "0x060000")  # the host bridge
    assert nvidia_gpus_on_pci(tmp_path) == 2
    assert nvidia_gpus_on_pci(tmp_path / "absent") is None


def test_without_nvml_a_node_with_gpus_cannot_be_told_apart(monkeypatch):
    config = types.SimpleNamespace()
    monkeypatch.setattr("harness.plugin.node.node_nvml", lambda config: NoNvml("no driver"))
    monkeypatch.setattr(plugin.torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(plugin, "nvidia_gpus_on_pci", lambda: 4)
    with pytest.raises(ProfileError, match=r"NVML unavailable \(no driver\), yet torch sees 0"):
        plugin.node_models(config)  # type: ignore[arg-type]
    monkeypatch.setattr(plugin, "nvidia_gpus_on_pci", lambda: 0)
    assert plugin.node_models(config).gpu_names == ()  # type: ignore[arg-type]
