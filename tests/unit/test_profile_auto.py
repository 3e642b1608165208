"""``--profile auto``: the shipped profile of the node's GPU model and count, exactly one, and a
node that lost GPUs is never taken for a smaller one."""

import types
from pathlib import Path

import pytest

from harness.hardware.pci import in_container, nvidia_gpus_on_pci
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
    # Fewer on the bus than NVML lists (a sandboxed sysfs) says nothing of a lost GPU.
    assert choose_profile(NodeModels((H100,), "NVML", pci_gpus=0), SHIPPED).name == "h100-1x"


def device(
    root: Path, address: str, vendor: str, kind: str, driver: str | None = None, vf: bool = False
) -> None:
    folder = root / "devices" / address
    folder.mkdir(parents=True)
    (folder / "vendor").write_text(f"{vendor}\n")
    (folder / "class").write_text(f"{kind}\n")
    if driver is not None:
        (root / "drivers" / driver).mkdir(parents=True, exist_ok=True)
        (folder / "driver").symlink_to(root / "drivers" / driver)
    if vf:
        (folder / "physfn").symlink_to(root / "devices")


def test_the_pci_bus_counts_the_nodes_nvidia_gpus_only(tmp_path):
    device(tmp_path, "0000:18:00.0", "0x10de", "0x030200", "nvidia")  # an H100: 3D controller
    device(tmp_path, "0000:2a:00.0", "0x10de", "0x030000")  # a GPU the driver did not bind
    device(tmp_path, "0000:2a:00.1", "0x10de", "0x040300")  # its audio function
    device(tmp_path, "0000:c0:00.0", "0x10de", "0x068000", "nvidia-nvswitch")  # an NVSwitch
    device(tmp_path, "0000:00:00.0", "0x8086", "0x060000")  # the host bridge
    device(tmp_path, "0000:3b:00.0", "0x10de", "0x030200", "vfio-pci")  # given to a VM
    device(tmp_path, "0000:3b:00.4", "0x10de", "0x030200", "nvidia", vf=True)  # a vGPU function
    assert nvidia_gpus_on_pci(tmp_path / "devices", container=False) == 2
    assert nvidia_gpus_on_pci(tmp_path / "absent", container=False) is None
    # A container sees the host's bus, not the GPUs it was given.
    assert nvidia_gpus_on_pci(tmp_path / "devices", container=True) is None


def test_without_nvml_a_node_with_gpus_cannot_be_told_apart(monkeypatch):
    config = types.SimpleNamespace()
    monkeypatch.setattr("harness.plugin.node.node_nvml", lambda config: NoNvml("no driver"))
    monkeypatch.setattr(plugin.torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(plugin, "nvidia_gpus_on_pci", lambda: 4)
    with pytest.raises(ProfileError, match=r"NVML unavailable \(no driver\), yet torch sees 0"):
        plugin.node_models(config)  # type: ignore[arg-type]
    monkeypatch.setattr(plugin, "nvidia_gpus_on_pci", lambda: 0)
    assert plugin.node_models(config).gpu_names == ()  # type: ignore[arg-type]


def test_a_container_is_told_by_its_gpu_variable_or_marks(tmp_path, monkeypatch):
    mark = tmp_path / ".dockerenv"
    monkeypatch.setattr("harness.hardware.pci.CONTAINER_MARKS", (mark,))
    assert in_container({"NVIDIA_VISIBLE_DEVICES": "0,1"})
    assert not in_container({"NVIDIA_VISIBLE_DEVICES": "all"})
    assert not in_container({})
    mark.write_text("")
    assert in_container({})


def test_acceptance_of_a_node_needs_every_gpu_it_expects(monkeypatch):
    import torch

    from harness.devices import DeviceSet
    from harness.gpus import Gpu
    from harness.plugin.options import devices_key

    config = types.SimpleNamespace(stash=pytest.Stash())
    cuda = tuple(torch.device("cuda", i) for i in (0, 1))
    config.stash[devices_key] = DeviceSet("cuda", "cuda", cuda)
    tested = [Gpu(f"GPU-{i}", H100, "bus", nvml, i) for i, nvml in enumerate((3, 1))]
    monkeypatch.setattr("harness.plugin.node_report.devices_under_test", lambda config: tested)
    text = plugin.untested_gpus(config, load_profile("h100-sxm-8x"))  # type: ignore[arg-type]
    assert text == (
        "profile h100-sxm-8x expects 8 GPUs; --devices cuda:0,1 tests 2 (GPU 3, GPU 1): the "
        "per-GPU checks of the others would not run (give every GPU to the run: --devices "
        "cuda, CUDA_VISIBLE_DEVICES unset)"
    )
    assert plugin.untested_gpus(config, load_profile("cpu-virtual")) is None  # type: ignore[arg-type]
    config.stash[devices_key] = DeviceSet("cpu:4", "cpu", (torch.device("cpu"),) * 4)
    assert plugin.untested_gpus(config, load_profile("h100-sxm-8x")) is None  # type: ignore[arg-type]
