"""Node snapshots: round trip, validation with one-line errors, the CLI, ``--fake-node``."""

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from harness.__main__ import main
from harness.nvml import (
    FORMAT,
    METRICS,
    NOT_IN_SNAPSHOT,
    XID_EVENTS,
    FakeNvml,
    GpuLostError,
    SnapshotError,
    Unavailable,
    load_snapshot,
    take_snapshot,
    write_snapshot,
)
from harness.nvml.snapshot import ADDED_IN_2, FORMAT_1
from harness.plugin.node import NoNvml, fake_node_key, node_nvml
from tests.pytest_run import REPO, clean_env, run_pytest

H100X8 = REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h100-sxm-x8.json"
H200X1 = REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h200x1.json"


def everything(nvml: Any) -> Any:
    uuids = nvml.gpu_uuids()
    return (
        nvml.driver_version(),
        nvml.cuda_version(),
        [nvml.readings(uuid) for uuid in uuids],
        [nvml.topology(a, b) for a in uuids for b in uuids if a != b],
    )


@pytest.mark.parametrize("source", [H100X8, H200X1])
def test_round_trip_gives_identical_readings(source: Path, tmp_path: Path) -> None:
    fake = FakeNvml(load_snapshot(source))
    write_snapshot(take_snapshot(fake), tmp_path / "again.json")
    again = FakeNvml(load_snapshot(tmp_path / "again.json"))
    assert everything(again) == everything(fake)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "node.json"
    target.write_text("old")
    snapshot = load_snapshot(H200X1)
    snapshot.gpus[0]["name"] = object()  # not JSON-serialisable: the write fails midway
    with pytest.raises(TypeError):
        write_snapshot(snapshot, target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]


def edited(tmp_path: Path, edit: Any) -> Path:
    data = json.loads(H100X8.read_text())
    edit(data)
    path = tmp_path / "node.json"
    path.write_text(json.dumps(data))
    return path


def setter(*keys: Any, value: Any) -> Any:
    def edit(data: Any) -> None:
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return edit


def deleter(*keys: Any) -> Any:
    def edit(data: Any) -> None:
        for key in keys[:-1]:
            data = data[key]
        del data[keys[-1]]

    return edit


MALFORMED = [
    (
        setter("gpus", 1, "memory_total_mib", value="80GB"),
        'gpus[1].memory_total_mib: expected an integer, got "80GB"',
    ),
    (
        setter("gpus", 0, "memory_total_mib", value=True),
        "gpus[0].memory_total_mib: expected an integer, got true",
    ),
    (
        setter("gpus", 0, "ecc_enabled", value=1),
        "gpus[0].ecc_enabled: expected true or false, got 1",
    ),
    (
        setter("gpus", 0, "power_usage_w", value="70 W"),
        'gpus[0].power_usage_w: expected a number, got "70 W"',
    ),
    (setter("gpus", 0, "name", value=None), "gpus[0].name: expected a string, got null"),
    (
        setter("gpus", 2, "clock_event_reasons", value=[1]),
        "gpus[2].clock_event_reasons: expected a list of strings, got [1]",
    ),
    (
        setter("gpus", 0, "temperature_c", value={"unavailable": "Broken"}),
        "gpus[0].temperature_c.unavailable: expected one of NotSupported",
    ),
    (
        setter("gpus", 0, "temperature_c", value={"x": 1}),
        'gpus[0].temperature_c: expected an integer, {"unavailable": REASON}',
    ),
    (deleter("gpus", 3, "pcie_gen_max"), "gpus[3].pcie_gen_max: missing"),
    (setter("gpus", 0, "nvlink_up", value=18), "gpus[0].nvlink_up: unknown field"),
    (
        setter("gpus", 1, "uuid", value="GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8300"),
        "gpus[1].uuid: duplicate UUID",
    ),
    (setter("gpus", 4, value=[]), "gpus[4]: expected an object, got []"),
    (setter("gpus", value={}), "gpus: expected a list, got {}"),
    (deleter("gpus"), "gpus: missing"),
    (
        setter("format", value="gpu-harness-snapshot/3"),
        "format: expected 'gpu-harness-snapshot/2' or 'gpu-harness-snapshot/1', "
        'got "gpu-harness-snapshot/3"',
    ),
    (
        deleter("format"),
        "format: expected 'gpu-harness-snapshot/2' or 'gpu-harness-snapshot/1', got null",
    ),
    (deleter("gpus", 2, "temperature_slowdown_c"), "gpus[2].temperature_slowdown_c: missing"),
    (deleter("gpus", 0, "xid_events"), "gpus[0].xid_events: missing"),
    (
        setter("gpus", 0, "xid_events", value=["79"]),
        'gpus[0].xid_events: expected a list of integers, got ["79"]',
    ),
    (
        setter("gpus", 0, "xid_events", value=79),
        "gpus[0].xid_events: expected a list of integers, got 79",
    ),
    (deleter("driver_version"), "driver_version: missing"),
    (setter("cuda_version", value=13.0), "cuda_version: expected a string, got 13.0"),
    (setter("topology", 0, "level", value="nvlink"), "topology[0].level: expected one of internal"),
    (
        setter("topology", 0, "gpus", value=["GPU-x", "GPU-y"]),
        "topology[0].gpus: expected two UUIDs of listed GPUs",
    ),
    (deleter("topology", 1, "level"), "topology[1].level: missing"),
]


@pytest.mark.parametrize(("edit", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_snapshot_is_one_line_naming_file_and_field(
    tmp_path: Path, edit: Any, message: str
) -> None:
    path = edited(tmp_path, edit)
    with pytest.raises(SnapshotError) as info:
        load_snapshot(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {message}")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
        ("[]", "expected a JSON object, got []"),
        ("", "not valid JSON"),
    ],
)
def test_not_a_snapshot(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "node.json"
    path.write_text(content)
    with pytest.raises(SnapshotError) as info:
        load_snapshot(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"nope\.json: cannot read: No such file"):
        load_snapshot(tmp_path / "nope.json")


def format_1(data: Any) -> None:
    """The same node as an older ``/1`` snapshot: without the fields ``/2`` added."""
    data["format"] = FORMAT_1
    for gpu in data["gpus"]:
        for name in ADDED_IN_2:
            del gpu[name]


def test_format_1_still_loads_with_its_missing_readings_unavailable(tmp_path: Path) -> None:
    fake = FakeNvml(load_snapshot(edited(tmp_path, format_1)))
    uuid = fake.gpu_uuids()[0]
    assert fake.read(uuid, "temperature_c") == 30
    for metric in ("temperature_slowdown_c", "temperature_shutdown_c", "nvlink_links_total"):
        assert fake.read(uuid, metric) == Unavailable(metric, NOT_IN_SNAPSHOT)
    assert fake.xid_events(uuid) == Unavailable(XID_EVENTS, NOT_IN_SNAPSHOT)
    # Written again it is a /2 snapshot saying what was not recorded.
    write_snapshot(take_snapshot(fake), tmp_path / "again.json")
    again = FakeNvml(load_snapshot(tmp_path / "again.json"))
    assert json.loads((tmp_path / "again.json").read_text())["format"] == FORMAT
    assert everything(again) == everything(fake)
    assert again.xid_events(uuid) == Unavailable(XID_EVENTS, NOT_IN_SNAPSHOT)


def test_format_1_refuses_the_fields_of_2(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        format_1(data)
        data["gpus"][0]["xid_events"] = []

    with pytest.raises(SnapshotError, match=r"gpus\[0\]\.xid_events: unknown field"):
        load_snapshot(edited(tmp_path, edit))


def test_xid_events_and_lost_topology_round_trip(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        data["gpus"][1]["xid_events"] = [79, 48]
        data["gpus"][2]["xid_events"] = {"error": "GpuIsLost"}
        data["gpus"][3]["xid_events"] = {"unavailable": "NotSupported"}
        data["topology"][0]["level"] = {"error": "GpuIsLost"}

    fake = FakeNvml(load_snapshot(edited(tmp_path, edit)))
    write_snapshot(take_snapshot(fake), tmp_path / "again.json")
    again = FakeNvml(load_snapshot(tmp_path / "again.json"))
    uuids = again.gpu_uuids()
    assert again.xid_events(uuids[1]) == (79, 48)
    with pytest.raises(GpuLostError):
        again.xid_events(uuids[2])
    assert again.xid_events(uuids[3]) == Unavailable(XID_EVENTS, "NotSupported")
    assert again.topology(uuids[0], uuids[1]) == Unavailable("topology", "GpuIsLost")


def test_unavailable_and_lost_readings_load(tmp_path: Path) -> None:
    def edit(data: Any) -> None:
        data["gpus"][0]["temperature_c"] = {"unavailable": "NoPermission"}
        data["gpus"][0]["power_usage_w"] = {"error": "GpuIsLost"}

    fake = FakeNvml(load_snapshot(edited(tmp_path, edit)))
    uuid = fake.gpu_uuids()[0]
    assert fake.read(uuid, "temperature_c") == Unavailable("temperature_c", "NoPermission")


def test_format_is_documented_for_operators() -> None:
    page = (REPO / "docs" / "operators.md").read_text()
    assert "## Node snapshots" in page
    assert FORMAT in page
    for metric in [*METRICS, XID_EVENTS]:
        assert f"`{metric}`" in page, metric


def test_cli_without_nvml_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "node.json"
    env = clean_env()
    env["LD_LIBRARY_PATH"] = ""  # a GPU machine running this would find its real libnvidia-ml
    result = subprocess.run(
        [sys.executable, "-m", "harness", "inventory", "--json", "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    if result.returncode == 0:
        pytest.skip("NVML is available on this machine")
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("harness inventory: NVML unavailable: ")
    assert not out.exists()


def test_cli_writes_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_nvml import UUIDS, stub_pynvml

    monkeypatch.setitem(sys.modules, "pynvml", stub_pynvml())
    out = tmp_path / "node.json"
    assert main(["inventory", "--json", "-o", str(out)]) == 0
    snapshot = load_snapshot(out)
    assert [gpu["uuid"] for gpu in snapshot.gpus] == UUIDS


class Config:
    def __init__(self, snapshot: Any) -> None:
        self.stash = pytest.Stash()
        self.stash[fake_node_key] = snapshot


def test_nvml_fixture_reads_the_fake_node() -> None:
    nvml = node_nvml(Config(load_snapshot(H200X1)))  # type: ignore[arg-type]
    assert isinstance(nvml, FakeNvml)
    assert nvml.read(nvml.gpu_uuids()[0], "name") == "NVIDIA H200"


def test_nvml_is_opened_once_per_process() -> None:
    config = Config(load_snapshot(H200X1))
    assert node_nvml(config) is node_nvml(config)  # type: ignore[arg-type]


def test_xids_are_watched_from_collection_when_a_test_uses_nvml() -> None:
    import harness.plugin.node as node

    class Watched(FakeNvml):
        watches = 0

        def watch_xid(self) -> None:
            self.watches += 1

    config = Config(None)
    config.stash[node.nvml_key] = fake = Watched(load_snapshot(H200X1))
    config.option = types.SimpleNamespace(collectonly=False)

    class Item:
        fixturenames = ("nvml",)

        def get_closest_marker(self, name: str) -> None:
            return None

    node.pytest_collection_modifyitems(config, [Item()])  # type: ignore[arg-type]
    assert fake.watches == 1


def test_no_nvml_skips_with_the_reason() -> None:
    nvml = NoNvml("NVML library not found")
    with pytest.raises(pytest.skip.Exception, match="NVML unavailable: NVML library not found"):
        nvml.read("GPU-x", "temperature_c")


def test_fake_node_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    path = edited(tmp_path, setter("gpus", 1, "memory_total_mib", value="80GB"))
    result = run_pytest(["--fake-node", str(path), "--collect-only", "-q", str(tmp_path)])
    assert result.returncode == 4
    lines = [line for line in result.stderr.splitlines() if "--fake-node" in line]
    assert lines == [
        f'ERROR: --fake-node {path}: gpus[1].memory_total_mib: expected an integer, got "80GB"'
    ]


def test_fake_node_feeds_the_nvml_fixture(tmp_path: Path) -> None:
    (tmp_path / "test_node.py").write_text(
        "def test_node(nvml):\n"
        "    assert type(nvml).__name__ == 'FakeNvml'\n"
        "    assert len(nvml.gpu_uuids()) == 8\n"
        "    assert {nvml.read(u, 'nvlink_links_up') for u in nvml.gpu_uuids()} == {18}\n"
    )
    result = run_pytest(["--fake-node", str(H100X8), "-q", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_prints_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["environment"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("torch ")
    assert ", nvidia_ml_py " in out[0]
    assert any(line.startswith("CUBLAS_WORKSPACE_CONFIG=") for line in out)
    assert out[-1].startswith("CUDA allocator backend: ")


def test_an_nvml_error_recorded_as_unavailable_survives_a_round_trip(tmp_path: Path) -> None:
    # What a VM that refuses XID event sets leaves in a snapshot (harness.nvml.real).
    reason = "NVML error registering for XID events: NVML error 999"

    def edit(data: Any) -> None:
        data["gpus"][0]["xid_events"] = {"unavailable": reason}

    fake = FakeNvml(load_snapshot(edited(tmp_path, edit)))
    assert fake.xid_events(fake.gpu_uuids()[0]) == Unavailable(XID_EVENTS, reason)
    with pytest.raises(
        SnapshotError, match=r'expected one of NotSupported.* or "NVML error \.\.\."'
    ):
        load_snapshot(
            edited(tmp_path, setter("gpus", 0, "xid_events", value={"unavailable": "Nope"}))
        )


def test_cuda_that_cannot_serve_the_devices_is_a_usage_error(monkeypatch) -> None:
    import torch

    import harness.plugin.node as node
    from harness.devices import DeviceSet
    from harness.gpus import CudaUnusableError
    from harness.plugin.options import devices_key

    def config() -> Config:
        made = Config(load_snapshot(H200X1))
        made.stash[devices_key] = DeviceSet(
            "cuda:0,1", "cuda", (torch.device("cuda", 0), torch.device("cuda", 1))
        )
        return made

    def broken() -> list:
        raise CudaUnusableError("CUDA driver version is insufficient")

    monkeypatch.setattr(node, "cuda_from_torch", broken)
    with pytest.raises(pytest.UsageError, match=r"^--devices cuda:0,1: CUDA unusable: CUDA driver"):
        node.node_gpus(config())  # type: ignore[arg-type]
    monkeypatch.setattr(node, "cuda_from_torch", lambda: [])
    shows = r"CUDA shows 0 device\(s\) here, no cuda:0, cuda:1$"
    with pytest.raises(pytest.UsageError, match=shows):
        node.node_gpus(config())  # type: ignore[arg-type]
