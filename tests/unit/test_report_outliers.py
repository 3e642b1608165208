"""harness.report.outliers: a GPU far below its identical peers, even inside its tolerance."""

import statistics

from harness.report.__main__ import main
from harness.report.model import load_report
from harness.report.outliers import fleet_outliers
from tests.report_data import H100, H200, host, write_fleet


def outliers_of(tmp_path, **options):
    return fleet_outliers(load_report(write_fleet(tmp_path, **options)))


def test_a_slow_gpu_among_eight_nodes_is_flagged_though_it_passes(tmp_path):
    found = outliers_of(tmp_path, nodes=8, gpus=8, slow={("gpu-node05", 6): 0.92})
    assert found
    assert {o.node for o in found} == {"gpu-node05"}
    own = {(o.check.rsplit("::", 1)[1], o.figure) for o in found if o.check.endswith("[cuda:6]")}
    assert own == {
        ("test_copy_within_a_gpu[cuda:6]", "d2d_copy_bandwidth"),
        ("test_pinned_host_to_gpu[cuda:6]", "h2d_pinned_bandwidth"),
        ("test_bf16_matmul[cuda:6]", "bf16_matmul_tflops"),
    }
    pairs = {o.check.rsplit("[", 1)[1] for o in found if "test_peer_to_peer" in o.check}
    assert pairs <= {f"cuda:{a}-cuda:{b}]" for a in range(8) for b in range(8) if 6 in (a, b)}
    assert len(pairs) >= 10  # most of the 14 links of GPU 6, each direction
    copy = next(o for o in found if o.figure == "d2d_copy_bandwidth")
    assert copy.verdict == "pass"
    assert copy.gpu_model == H100
    assert copy.runs == 8
    assert -0.10 < copy.deviation < -0.06
    assert "below the median" in copy.line
    assert "its own verdict: pass" in copy.line


def test_a_uniform_fleet_has_no_outliers(tmp_path):
    assert outliers_of(tmp_path, nodes=8, gpus=4, seed=3) == []


def test_a_faster_gpu_is_not_an_outlier(tmp_path):
    assert outliers_of(tmp_path, nodes=8, gpus=2, slow={("gpu-node02", 1): 1.12}) == []


def test_with_identical_figures_a_small_difference_is_not_flagged_a_large_one_is(tmp_path):
    # noise=0: MAD is 0, so the minimum relative deviation alone decides
    small = outliers_of(tmp_path / "a", nodes=6, gpus=1, noise=0, slow={("gpu-node03", 0): 0.97})
    assert small == []
    large = outliers_of(tmp_path / "b", nodes=6, gpus=1, noise=0, slow={("gpu-node03", 0): 0.9})
    assert {(o.node, o.figure, o.sigma) for o in large} == {
        ("gpu-node03", figure, 0.0)
        for figure in ("d2d_copy_bandwidth", "h2d_pinned_bandwidth", "bf16_matmul_tflops")
    }


def test_too_few_nodes_are_not_compared(tmp_path):
    assert outliers_of(tmp_path, nodes=4, gpus=1, slow={("gpu-node02", 0): 0.5}) == []


def test_gpu_models_are_compared_only_with_their_own_kind(tmp_path):
    models = {host(i): H200 for i in range(6)}  # 6 H200s (d2d 4200 GB/s) and 6 H100s (2930)
    report = load_report(write_fleet(tmp_path, nodes=12, gpus=1, model=models))
    assert fleet_outliers(report) == []
    copies = [
        f.value for _, c in report.cases() for f in c.figures if f.name == "d2d_copy_bandwidth"
    ]
    low = statistics.median(copies) * 0.9
    assert sum(value < low for value in copies) == 6  # one pool: every H100 would be "slow"
    slow = write_fleet(tmp_path / "slow", nodes=12, gpus=1, model=models, slow={(host(2), 0): 0.9})
    found = fleet_outliers(load_report(slow))
    assert {(o.node, o.gpu_model) for o in found} == {(host(2), H200)}


def test_the_command_lists_outliers_and_exits_1(tmp_path, capsys):
    paths = write_fleet(tmp_path, nodes=6, gpus=1, slow={("gpu-node04", 0): 0.9})
    assert main(["outliers", *map(str, paths)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 fleet outlier(s) among 6 runs"
    assert all(line.startswith("gpu-node04: suites.hardware.") for line in lines[:-1])


def test_the_command_exits_0_on_a_healthy_fleet_and_2_on_a_bad_file(tmp_path, capsys):
    paths = write_fleet(tmp_path, nodes=6, gpus=1)
    assert main(["outliers", *map(str, paths)]) == 0
    assert capsys.readouterr().out == "no fleet outliers among 6 runs\n"
    assert main(["outliers", str(tmp_path / "none.xml")]) == 2
    assert capsys.readouterr().err.endswith("none.xml: no such file\n")


def test_counters_and_amounts_are_not_fleet_compared(tmp_path):
    # Node 2's ECC counter (median 0) fails its own check; it is not an outlier as well.
    files = write_fleet(tmp_path, nodes=8, gpus=2, fail={2: "ecc"})
    report = load_report(files)
    assert any(f.unit == "" for _, case in report.cases() for f in case.figures)
    assert [o for o in fleet_outliers(report) if o.unit in ("", "MiB", "samples")] == []
