"""The hardware performance suites and their machinery in real pytest runs on CPU: skips with
reasons, figures as JUnit properties (judged with a profile, recorded without), a measurement
on the rank pool returning its figures to the controller, and the all-reduce on gloo ranks."""

import textwrap
import xml.etree.ElementTree as ET

import pytest

from harness.devices import parse_devices
from harness.perf.collective import AllReduceResult
from harness.perf.gpus import UNDER_TORCHRUN, distinct_gpus, needs_gpus, ordered_pairs
from harness.perf.measurement import Measurement
from harness.perf.timing import Timing
from harness.rankpool.pool import RankPool
from tests.pytest_run import REPO, run_pytest


def properties(case: ET.Element) -> dict[str, str]:
    return {prop.get("name"): prop.get("value") for prop in case.iterfind("properties/property")}


def cases(path) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


def test_the_cpu_run_skips_gpu_checks_with_reasons_and_compares_virtual_devices(tmp_path):
    junit = tmp_path / "junit.xml"
    run = run_pytest(
        [
            str(REPO / "suites/hardware/test_bandwidth.py"),
            str(REPO / "suites/hardware/test_compute.py"),
            str(REPO / "suites/hardware/test_agreement.py"),
            "--devices",
            "cpu:4",
            "-rs",
            f"--junitxml={junit}",
        ]
    )
    assert run.returncode == 0, run.stdout + run.stderr
    reason = "needs a CUDA GPU; --devices cpu:4 are virtual CPU devices"
    assert run.stdout.count(reason) == 7  # one skip per GPU test, none silent
    found = cases(junit)
    agreement = found["test_every_gpu_computes_the_same_bits[float32]"]
    assert properties(agreement)["devices_compared"] == "4"
    assert len(properties(agreement)["result_sha256"]) == 64


def test_acceptance_on_a_gpu_profile_fails_every_gpu_check_that_cannot_run():
    run = run_pytest(
        [
            str(REPO / "suites/hardware/test_compute.py"),
            "--devices",
            "cpu:2",
            "--profile",
            "h200-1x",
            "--acceptance",
        ]
    )
    assert run.returncode == 1
    assert "FAILED suites/hardware/test_compute.py::test_bf16_matmul[no-gpu]" in run.stdout
    assert "required check performance.bf16_matmul_tflops did not run" in run.stdout
    # fp32 matmul's figure is an estimate in h200-1x: not required until measured.
    assert "SKIPPED [1] suites/hardware/test_compute.py" in run.stdout


FIGURES = """
import pytest
from harness.perf.collective import allreduce_on_rank
from harness.perf.measurement import Measurement
from harness.perf.timing import Timing

def figure(value):
    return Measurement(value, "GB/s", Timing((1e-3, 2e-3, 3e-3), 1), (("size", "512 MiB"),))

def test_within(figures):
    figures.record("d2d_copy_bandwidth", figure(4100.0))

def test_below(figures):
    figures.record("d2d_copy_bandwidth", figure(1000.0))

def test_no_reference(figures):
    figures.record("p2p_bandwidth", figure(300.0))

def test_on_ranks(on_ranks, figures):
    ranks = on_ranks(allreduce_on_rank, 2, backend="gloo", nbytes=2**20, warmup=1, repeats=3)
    assert [r.rank for r in ranks] == [0, 1] and not any(r.problem for r in ranks)
    figures.record("allreduce_busbw", ranks[0].busbw)

def test_wrong_backend(on_ranks):
    on_ranks(allreduce_on_rank, 2, backend="nccl")
"""


@pytest.fixture(scope="module")
def figures_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("figures") / "test_figures.py"
    path.write_text(textwrap.dedent(FIGURES))
    return path


def run_figures(path, junit, *options):
    return run_pytest(
        [
            str(path),
            "--devices",
            "cpu:2",
            "-rs",
            f"--junitxml={junit}",
            "--rootdir",
            str(REPO),
            *options,
        ]
    )


def test_with_a_profile_figures_are_judged_where_it_has_a_reference(figures_file, tmp_path):
    junit = tmp_path / "junit.xml"
    run = run_figures(figures_file, junit, "--profile", "h200-1x")
    assert run.returncode == 1, run.stdout + run.stderr
    found = cases(junit)
    within = properties(found["test_within"])
    assert within["metric.d2d_copy_bandwidth"] == "4100 GB/s"
    assert within["metric.d2d_copy_bandwidth.reference"] == "4200 GB/s"
    assert within["metric.d2d_copy_bandwidth.verdict"] == "pass"
    assert within["d2d_copy_bandwidth.median_time"] == "2 ms"
    assert within["d2d_copy_bandwidth.size"] == "512 MiB"
    failure = found["test_below"].find("failure").get("message")
    assert failure.startswith("Failed: d2d_copy_bandwidth: 1000 GB/s: fail, below 3570 GB/s")
    # No reference in this profile: recorded, not judged, and the test passes.
    assert properties(found["test_no_reference"])["metric.p2p_bandwidth"] == "300 GB/s"
    assert "metric.p2p_bandwidth.reference" not in properties(found["test_no_reference"])
    assert found["test_no_reference"].find("failure") is None
    on_ranks = properties(found["test_on_ranks"])
    assert on_ranks["metric.allreduce_busbw"].endswith(" GB/s")
    assert on_ranks["allreduce_busbw.world_size"] == "2"
    assert on_ranks["allreduce_busbw.backend"] == "gloo"
    assert "needs nccl with one rank per GPU; 2 ranks on cpu, cpu use gloo" in run.stdout


def test_without_a_profile_figures_are_recorded(figures_file, tmp_path):
    junit = tmp_path / "junit.xml"
    run = run_figures(figures_file, junit)
    assert run.returncode == 0, run.stdout + run.stderr
    below = properties(cases(junit)["test_below"])
    assert below["metric.d2d_copy_bandwidth"] == "1000 GB/s"
    assert "metric.d2d_copy_bandwidth.verdict" not in below


def test_the_allreduce_measurement_on_two_gloo_ranks():
    with RankPool(2) as pool:
        results = pool.run(
            "harness.perf.collective",
            "allreduce_on_rank",
            {"nbytes": 2**20, "warmup": 1, "repeats": 3},
        )
    assert [r.outcome for r in results] == ["passed", "passed"], [r.traceback for r in results]
    first, second = (r.value for r in results)
    assert first.busbw == second.busbw  # times averaged over the ranks: one figure
    assert first.wrong_elements == second.wrong_elements == 0
    algbw = 2**20 / first.busbw.timing.median / 1e9
    assert first.busbw.value == pytest.approx(algbw)  # n = 2: busbw = algbw
    assert ("algbw", f"{algbw:.6g} GB/s") in first.busbw.details


def test_a_wrong_sum_names_the_rank_and_its_device():
    result = AllReduceResult(
        1,
        "cuda:1 (NVIDIA H200, GPU-abc, 00000000:1A:00.0)",
        Measurement(1.0, "GB/s", Timing((1.0,), 0)),
        3,
        1024,
    )
    assert result.problem == (
        "rank 1 on cuda:1 (NVIDIA H200, GPU-abc, 00000000:1A:00.0): 3 of 1024 elements of the "
        "all-reduced sum are wrong"
    )


def test_which_devices_can_be_measured(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cpu = parse_devices("cpu:4")
    assert needs_gpus(cpu, 1) == "needs a CUDA GPU; --devices cpu:4 are virtual CPU devices"
    one = parse_devices("cuda:0,0", cuda_count=1)
    assert needs_gpus(one, 1) is None
    assert needs_gpus(one, 2) == "needs 2 distinct GPUs; --devices cuda:0,0 has 1 (cuda:0)"
    assert needs_gpus(parse_devices("cuda:1,0", cuda_count=2), 2) is None
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert needs_gpus(one, 1) == UNDER_TORCHRUN


def test_every_ordered_pair_of_distinct_gpus():
    gpus = distinct_gpus(parse_devices("cuda:0,1,2,1", cuda_count=3))
    assert [gpu.index for gpu in gpus] == [0, 1, 2]
    pairs = ordered_pairs(gpus)
    assert len(pairs) == 6
    assert [(a.index, b.index) for a, b in pairs[:2]] == [(0, 1), (0, 2)]
    assert all(a != b for a, b in pairs)


def test_the_figures_command_refuses_without_a_gpu_in_one_line(capsys):
    from harness.benchmarks.hardware import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--devices", "cpu:2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "python -m harness.benchmarks.hardware: needs CUDA GPUs; --devices cpu:2 has none\n"
    )
