"""suites/hardware against fake nodes: the shipped healthy snapshots pass, and each fault
injected by editing a copy of one fails exactly the right test, naming the GPU, the value and
the limit, while the other inventory and health tests pass.

Every run is pytest in a subprocess with ``--fake-node`` and ``--profile``; they all start
once per module and the tests read their JUnit files. The healthy runs take all of
``suites/hardware`` (its CUDA measurements skip on a CPU); the fault runs take the inventory and
health files only, and put several faults, each on its own GPU, into one run.

The fault runs number the GPUs for CUDA differently from NVML (``CUDA_VISIBLE_DEVICES``
reversed, or some GPUs hidden), so a GPU's two indices differ: each fault must name its card
the one way (``harness.gpus.Gpu.label``) in the failure, in the JUnit figures that belong to it
(by UUID), in the suite's GPU table, and in what the report tools make of the file.
"""

import copy
import importlib
import json
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.report.__main__ import main as report_main
from harness.report.model import load_report
from tests.pytest_run import REPO, clean_env, run_pytest

SNAPSHOTS = REPO / "harness" / "profiles" / "shipped" / "snapshots"
H100 = json.loads((SNAPSHOTS / "h100-sxm-x8.json").read_text())
H200 = json.loads((SNAPSHOTS / "h200x1.json").read_text())
INVENTORY = "suites/hardware/test_inventory.py"
HEALTH = "suites/hardware/test_health.py"


def suite_tests(path: str) -> set[str]:
    """The test ids of a suite file, from its test functions."""
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return {f"{path}::{name}" for name in vars(module) if name.startswith("test_")}


# Every inventory and health test: a fault must fail its own and leave the others passing.
MINE = suite_tests(INVENTORY) | suite_tests(HEALTH)
PER_GPU = MINE - {f"{INVENTORY}::test_gpu_count", f"{INVENTORY}::test_driver_version"}


def gpu(index: int, **fields: Any) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["gpus"][index].update(fields)

    return edit


def remove_gpu(index: int) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        uuid = data["gpus"].pop(index)["uuid"]
        data["topology"] = [pair for pair in data["topology"] if uuid not in pair["gpus"]]

    return edit


def lose_gpu(index: int) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        lost = data["gpus"][index]
        for field in lost:
            if field != "uuid":
                lost[field] = {"error": "GpuIsLost"}

    return edit


# How CUDA numbers the GPUs in each fault run: NVML index -> CUDA index.
VISIBLE = {"faults A": "7,6,5,4,3,2,1,0", "faults B": "4,6,1,3"}


def cuda_index(index: int, run: str | None) -> int | None:
    order = [int(i) for i in VISIBLE[run].split(",")] if run in VISIBLE else list(range(8))
    return order.index(index) if index in order else None


def label(index: int, run: str | None = None, name: str | None = None) -> str:
    gpu = H100["gpus"][index]
    cuda = cuda_index(index, run)
    where = "" if cuda is None else f"cuda:{cuda}, "
    return f"GPU {index} ({where}{name or gpu['name']}, {gpu['uuid']}, {gpu['pci_bus_id']})"


# Faults injected into the 8x H100 snapshot, each on its own GPU so that several share one
# run (a pytest subprocess costs seconds): name -> (run, GPU, edit, failing test, its lines).
# A fault leaking into another test would show there as a line naming its GPU.
Fault = tuple[str, int, dict[str, Any], str, list[str]]
FAULTS: dict[str, Fault] = {
    "thermal slowdown": (
        "faults A",
        0,
        {"temperature_c": 90, "clock_event_reasons": ["HwThermalSlowdown"]},
        f"{HEALTH}::test_temperature_below_slowdown",
        [
            "temperature_c = 90 C, limit <= 84 C (5 C below its slowdown threshold 89 C)",
            "clock_event_reasons include HwThermalSlowdown, limit none (thermal slowdown)",
        ],
    ),
    "ECC uncorrectable": (
        "faults A",
        1,
        {"ecc_volatile_uncorrected": 2, "ecc_aggregate_uncorrected": 2},
        f"{HEALTH}::test_no_uncorrectable_ecc_errors",
        ["ecc_volatile_uncorrected = 2, limit 0", "ecc_aggregate_uncorrected = 2, limit 0"],
    ),
    "wrong model": (
        "faults A",
        2,
        {"name": "NVIDIA H100 PCIe"},
        f"{INVENTORY}::test_gpu_model",
        ["name = 'NVIDIA H100 PCIe', limit: matches /H100 80GB HBM3/ (profile h100-sxm-8x)"],
    ),
    "too little memory": (
        "faults A",
        3,
        {"memory_total_mib": 40960},
        f"{INVENTORY}::test_memory_per_gpu",
        ["memory_total_mib = 40960 MiB, limit >= 80000 MiB (profile h100-sxm-8x)"],
    ),
    "pending remap": (
        "faults A",
        4,
        {"remapped_rows_pending": True, "remapped_rows_uncorrectable": 1},
        f"{HEALTH}::test_no_pending_or_failed_row_remap",
        ["remapped_rows_pending = true, limit false (a row remap waits for a GPU reset)"],
    ),
    "XID": (
        "faults A",
        5,
        {"xid_events": [79]},
        f"{HEALTH}::test_no_xid_during_the_run",
        ["xid_events = 79 during the run, limit none"],
    ),
    "PCIe width downgraded": (
        "faults A",
        6,
        {"pcie_width_current": 8},
        f"{HEALTH}::test_pcie_link_at_full_width_and_speed",
        ["pcie_width_current = 8, limit >= 16 (its maximum)"],
    ),
    "NVLink down": (
        "faults A",
        7,
        {"nvlink_links_up": 16},
        f"{HEALTH}::test_nvlink_links_up",
        ["nvlink_links_up = 16, limit 18 (2 of 18 down)"],
    ),
    "power capped": (
        "faults B",
        3,
        {"clock_event_reasons": ["SwPowerCap"]},
        f"{HEALTH}::test_clocks_not_held_down",
        ["clock_event_reasons = SwPowerCap, limit none but GpuIdle, ApplicationsClocksSetting"],
    ),
    "MIG on": (
        "faults B",
        4,
        {"mig_enabled": True},
        f"{INVENTORY}::test_mig_disabled",
        ["mig_enabled = true, limit false (profiles describe whole GPUs)"],
    ),
    "PCIe generation low on a busy GPU": (
        "faults B",
        6,
        {"pcie_gen_current": 3, "clock_event_reasons": []},
        f"{HEALTH}::test_pcie_link_at_full_width_and_speed",
        ["pcie_gen_current = 3, limit >= 5 (its maximum)"],
    ),
    # No fault: an idle GPU lowers its link generation to save power (no line expected).
    "PCIe generation low at idle": (
        "faults B",
        1,
        {"pcie_gen_current": 1},
        f"{HEALTH}::test_pcie_link_at_full_width_and_speed",
        [],
    ),
}
# A lost GPU has no place in the PCI bus order, so which CUDA index each GPU has is unknown.
GPU_LOST = (
    "GPU 2 (name unknown: GPU lost, GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8302, "
    "PCI bus id unknown: GPU lost): GPU lost (NVML_ERROR_GPU_IS_LOST reading "
)
UNSUPPORTED_REASON = f"{label(0)}: temperature_c unavailable (NotSupported)"
H100_8X = ["--profile", "h100-sxm-8x"]
BOTH_FILES = [INVENTORY, HEALTH]  # the fault runs leave out the CUDA measurements


def faults_of(run: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for fault_run, index, fields, _, _ in FAULTS.values():
            if fault_run == run:
                gpu(index, **fields)(data)

    return edit


# name -> (snapshot, its edit, pytest arguments)
RUNS: dict[str, tuple[dict, Callable[[dict], None] | None, list[str]]] = {
    "healthy h200": (H200, None, ["suites/hardware", "--profile", "h200-1x"]),
    "healthy h100": (H100, None, ["suites/hardware", *H100_8X]),
    "faults A": (H100, faults_of("faults A"), [*BOTH_FILES, *H100_8X]),
    "faults B": (H100, faults_of("faults B"), [*BOTH_FILES, *H100_8X]),
    "missing GPU": (H100, remove_gpu(5), [*BOTH_FILES, *H100_8X]),
    "GPU lost": (H100, lose_gpu(2), [*BOTH_FILES, *H100_8X]),
    "unsupported": (
        H100,
        gpu(0, temperature_c={"unavailable": "NotSupported"}),
        [*BOTH_FILES, *H100_8X],
    ),
    "unsupported, acceptance": (
        H100,
        gpu(0, temperature_c={"unavailable": "NotSupported"}),
        [*BOTH_FILES, *H100_8X, "--acceptance"],
    ),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    folder = tmp_path_factory.mktemp("hardware")
    commands = {}
    for name, (source, edit, args) in RUNS.items():
        data = copy.deepcopy(source)
        if edit is not None:
            edit(data)
        node, xml = folder / f"{slug(name)}.json", folder / f"{slug(name)}.xml"
        node.write_text(json.dumps(data))
        args = [*args, "-rA", "--fake-node", str(node), "--junitxml", str(xml)]
        env = clean_env()
        if name in VISIBLE:
            env["CUDA_VISIBLE_DEVICES"] = VISIBLE[name]
        commands[name] = (args, env, xml)
    with ThreadPoolExecutor(max_workers=2) as pool:  # the CI machine has two cores
        yield {name: pool.submit(finished, *command) for name, command in commands.items()}


def finished(
    args: list[str], env: dict[str, str], xml: Path
) -> tuple[subprocess.CompletedProcess[str], ET.Element]:
    done = run_pytest(args, env=env)
    assert xml.exists(), done.stdout + done.stderr
    return done, ET.parse(xml).getroot()


def outcomes(root: ET.Element) -> dict[str, tuple[str, str]]:
    """test id (path::name) -> (outcome, message) in run order."""
    result = {}
    for case in root.iter("testcase"):
        module = case.get("classname", "")  # suites.hardware.test_health
        path = f"{module.replace('.', '/')}.py" if "." in module else module
        test = f"{path}::{case.get('name')}"
        child = next(iter(c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if child is None else child.tag
        text = "" if child is None else (child.get("message", "") + "\n" + (child.text or ""))
        result[test] = (outcome, text)
    return result


def mine(result: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    assert set(result) >= MINE, sorted(MINE - set(result))
    return {test: result[test] for test in MINE}


def properties(root: ET.Element, test_name: str) -> dict[str, str]:
    case = next(c for c in root.iter("testcase") if c.get("name") == test_name)
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_healthy_8x_h100_passes_every_check(runs):
    done, root = runs["healthy h100"].result()
    result = outcomes(root)
    assert {test: outcome for test, (outcome, _) in mine(result).items()} == dict.fromkeys(
        MINE, "passed"
    ), done.stdout
    assert list(result)[-1] == f"{HEALTH}::test_no_xid_during_the_run"  # it sees the whole run
    temperature = properties(root, "test_temperature_below_slowdown")
    assert temperature["metric.gpu0.temperature_c"] == "30 C"
    assert temperature["metric.gpu7.temperature_slowdown_c"] == "89 C"
    pcie = properties(root, "test_pcie_link_at_full_width_and_speed")
    assert pcie["metric.gpu3.pcie_width_current"] == "16"
    assert pcie["gpu3.pcie_gen_judged"] == "no: GpuIdle, the link may be saving power"
    assert properties(root, "test_no_xid_during_the_run")["metric.gpu5.xid_count"] == "0"
    assert properties(root, "test_driver_version")["driver_version"] == "580.95.05"


def test_healthy_h200_passes_and_skips_nvlink_it_does_not_have(runs):
    done, root = runs["healthy h200"].result()
    result = mine(outcomes(root))
    no_nvlink = {f"{INVENTORY}::test_nvlink_links", f"{HEALTH}::test_nvlink_links_up"}
    for test, (outcome, message) in result.items():
        if test in no_nvlink:
            assert outcome == "skipped"
            assert "profile h200-1x expects no NVLink: nothing to check" in message
        else:
            assert outcome == "passed", (test, message, done.stdout)


def problem_lines(message: str) -> list[str]:
    return sorted({line for line in message.splitlines() if line.startswith(("GPU ", "node: "))})


@pytest.mark.parametrize("run", ["faults A", "faults B"])
def test_injected_faults_fail_exactly_their_tests(runs, run):
    done, root = runs[run].result()
    result = mine(outcomes(root))
    expected: dict[str, list[str]] = {}
    for fault_run, index, fields, test, lines in FAULTS.values():
        if fault_run == run:
            named = label(index, run, fields.get("name"))
            expected.setdefault(test, []).extend(f"{named}: {line}" for line in lines)
    expected = {test: lines for test, lines in expected.items() if lines}
    failed = {test for test, (outcome, _) in result.items() if outcome != "passed"}
    assert failed == set(expected), done.stdout
    for test, lines in expected.items():
        assert result[test][0] == "failure"
        assert problem_lines(result[test][1]) == sorted(lines), result[test][1]
    assert done.returncode == 1


@pytest.mark.parametrize("name", FAULTS)
def test_fault_is_named_with_gpu_value_and_limit(runs, name):
    run, index, fields, test, lines = FAULTS[name]
    _, root = runs[run].result()
    message = mine(outcomes(root))[test][1]
    named = label(index, run, fields.get("name"))
    mentioned = [line for line in problem_lines(message) if line.startswith(f"{named}: ")]
    assert mentioned == sorted(f"{named}: {line}" for line in lines), message


@pytest.mark.parametrize("name", [name for name, fault in FAULTS.items() if fault[4]])
def test_the_faulty_card_is_named_alike_in_junit_and_the_reports(runs, name, tmp_path):
    run, index, fields, test, _ = FAULTS[name]
    _, root = runs[run].result()
    uuid = H100["gpus"][index]["uuid"]
    named = label(index, run, fields.get("name"))
    # The suite's GPU table gives the card both its indices.
    suite = {p.get("name"): p.get("value") for p in root.find("testsuite/properties")}
    cuda = cuda_index(index, run)
    assert suite[f"node.gpu.{index}.uuid"] == uuid
    assert suite[f"node.gpu.{index}.cuda_index"] == ("none" if cuda is None else str(cuda))
    # Its readings in the failing test are named by its NVML index, and its figures belong to
    # it by UUID.
    test_name = test.rsplit("::", 1)[1]
    found = properties(root, test_name)
    readings = {key for key in found if key.startswith((f"gpu{index}.", f"metric.gpu{index}."))}
    assert readings, found
    for key in readings:
        if key.startswith("metric.") and not key.endswith((".gpu", ".reference")):
            assert found[f"{key}.gpu"] == uuid, key
    owners = {value for key, value in found.items() if key.endswith(".gpu")}
    assert owners <= {gpu["uuid"] for gpu in H100["gpus"]}
    # The report tools label it the same way, from the file alone.
    xml = tmp_path / "run.xml"
    xml.write_bytes(ET.tostring(root))
    (report_run,) = load_report([xml]).runs
    case = next(c for c in report_run.cases if c.name == test_name)
    assert report_run.gpu(uuid).label == named
    for figure in case.figures:
        if figure.name.startswith(f"gpu{index}."):
            assert figure.gpus == (uuid,), figure


@pytest.mark.parametrize("run", ["faults A", "faults B"])
def test_the_summary_names_each_failing_card_as_the_run_did(runs, run, tmp_path, capsys):
    _, root = runs[run].result()
    xml = tmp_path / "run.xml"
    xml.write_bytes(ET.tostring(root))
    assert report_main(["summary", str(xml), "--format", "md", "-o", "-"]) == 0
    page = capsys.readouterr().out
    for fault_run, index, fields, _, lines in FAULTS.values():
        if fault_run == run and lines:
            assert label(index, run, fields.get("name")) in page, (index, run)


def test_missing_gpu_fails_the_count_only(runs):
    done, root = runs["missing GPU"].result()
    result = mine(outcomes(root))
    outcome, message = result.pop(f"{INVENTORY}::test_gpu_count")
    assert outcome == "failure"
    assert "node: gpu_count = 7, limit 8 (profile h100-sxm-8x); NVML lists: GPU 0 (" in message
    assert {outcome for outcome, _ in result.values()} == {"passed"}, done.stdout


def test_lost_gpu_fails_every_check_of_that_gpu(runs):
    done, root = runs["GPU lost"].result()
    result = mine(outcomes(root))
    failed = {test for test, (outcome, _) in result.items() if outcome == "failure"}
    assert failed == PER_GPU, done.stdout
    for test in PER_GPU:
        lines = problem_lines(result[test][1])
        assert len(lines) == 1, (test, lines)
        assert lines[0].startswith(GPU_LOST), (test, lines)


def test_unsupported_metric_skips_naming_it(runs):
    done, root = runs["unsupported"].result()
    result = mine(outcomes(root))
    outcome, message = result.pop(f"{HEALTH}::test_temperature_below_slowdown")
    assert outcome == "skipped"
    assert message.startswith(UNSUPPORTED_REASON)
    assert {outcome for outcome, _ in result.values()} == {"passed"}
    assert done.returncode == 0, done.stdout


def test_unsupported_metric_fails_under_acceptance(runs):
    done, root = runs["unsupported, acceptance"].result()
    result = mine(outcomes(root))
    outcome, message = result.pop(f"{HEALTH}::test_temperature_below_slowdown")
    assert outcome == "failure"
    assert message.startswith(
        "Failed: required check health.temperature did not run under --acceptance "
        f"(profile h100-sxm-8x): {UNSUPPORTED_REASON}"
    )
    assert {outcome for outcome, _ in result.values()} == {"passed"}, done.stdout
