"""harness.report.diff: what got worse since last night, and the exit code CI acts on."""

import pytest

from harness.report.__main__ import main
from harness.report.diff import compare
from harness.report.model import load_report
from tests.report_data import write_fleet

COPY = "suites.hardware.test_bandwidth::test_copy_within_a_gpu"
ECC = "suites.hardware.test_health::test_no_uncorrectable_ecc_errors"


def fleet(tmp_path, name, **faults):
    return load_report(write_fleet(tmp_path / name, nodes=4, gpus=2, **faults))


def test_the_same_fleet_on_another_night_has_no_regressions(tmp_path):
    diff = compare(fleet(tmp_path, "base", seed=1), fleet(tmp_path, "new", seed=2))
    assert diff.regressions == 0
    assert diff.worse == diff.moved == diff.new == diff.vanished == []


def test_a_node_failing_a_check_is_newly_failing_and_passing_again_later(tmp_path):
    good, bad = fleet(tmp_path, "good"), fleet(tmp_path, "bad", fail={"gpu-node02": "ecc"})
    diff = compare(good, bad)
    (change,) = diff.newly_failing
    assert (change.node, change.check, change.base, change.new) == (
        "gpu-node02",
        ECC,
        "passed",
        "failed",
    )
    assert "ecc_volatile_uncorrected = 2, limit 0" in change.message
    assert diff.regressions == 1
    back = compare(bad, good)
    assert [(c.node, c.check) for c in back.newly_passing] == [("gpu-node02", ECC)]
    assert back.regressions == 0


def test_an_errored_test_counts_as_failing(tmp_path):
    diff = compare(fleet(tmp_path, "a"), fleet(tmp_path, "b", fail={"gpu-node01": "error"}))
    (change,) = diff.newly_failing
    assert change.new == "error"
    assert "CUBLAS_STATUS_EXECUTION_FAILED" in change.message


def test_vanished_tests_and_a_vanished_node(tmp_path):
    base = fleet(tmp_path, "base")
    new = load_report(
        write_fleet(tmp_path / "new", nodes=3, gpus=2, vanish={"gpu-node02": f"{COPY}[cuda:1]"})
    )
    diff = compare(base, new)
    assert [(c.node, c.check, c.new) for c in diff.vanished] == [
        ("gpu-node02", f"{COPY}[cuda:1]", None)
    ]
    assert list(diff.vanished_nodes) == ["gpu-node04"]
    assert diff.regressions == 1 + diff.vanished_nodes["gpu-node04"]
    back = compare(new, base)
    assert list(back.new_nodes) == ["gpu-node04"]
    assert [(c.node, c.check) for c in back.new] == [("gpu-node02", f"{COPY}[cuda:1]")]
    assert back.regressions == 0


def test_a_figure_worse_beyond_its_tolerance_is_a_regression_even_when_it_passes(tmp_path):
    # 10% above the reference last night, 15% below tonight: -22.7%, beyond -20%, still a pass
    base = fleet(tmp_path, "base", slow={("gpu-node03", 1): 1.10}, noise=0)
    new = fleet(tmp_path, "new", slow={("gpu-node03", 1): 0.85}, noise=0)
    diff = compare(base, new)
    assert diff.newly_failing == []
    worse = {(m.node, m.check, m.figure) for m in diff.worse}
    assert ("gpu-node03", f"{COPY}[cuda:1]", "d2d_copy_bandwidth") in worse
    assert all(m.node == "gpu-node03" and m.change < -0.2 for m in diff.worse)
    moved = next(m for m in diff.worse if m.figure == "d2d_copy_bandwidth")
    assert moved.text.startswith("d2d_copy_bandwidth: 3223 GB/s -> 2490.5 GB/s (-22.7%, tolerance")
    # the other way round it is better beyond the +15% side: listed, not a regression
    back = compare(new, base)
    assert back.worse == []
    assert back.regressions == 0
    assert {m.figure for m in back.better} >= {"d2d_copy_bandwidth", "bf16_matmul_tflops"}


def test_a_figure_without_a_tolerance_that_moved_is_listed_not_a_regression(tmp_path):
    # p2p_bandwidth has no reference in the profile, so no tolerance
    base = fleet(tmp_path, "base", noise=0)
    new = fleet(tmp_path, "new", slow={("gpu-node01", 0): 0.8}, noise=0)
    diff = compare(base, new)
    assert {m.figure for m in diff.moved} == {"p2p_bandwidth"}
    assert {m.check.rsplit("[", 1)[1] for m in diff.moved} == {"cuda:0-cuda:1]", "cuda:1-cuda:0]"}
    assert diff.newly_failing == []
    assert diff.worse == []
    assert compare(base, new, untoleranced=0.25).moved == []


def run_diff(tmp_path, base_faults, new_faults, *options):
    base = write_fleet(tmp_path / "base", nodes=1, gpus=3, **base_faults)[0]
    new = write_fleet(tmp_path / "new", nodes=1, gpus=3, **new_faults)[0]
    return main(["diff", str(base), str(new), *options])


def test_exit_code_1_and_the_regression_listed(tmp_path, capsys):
    assert run_diff(tmp_path, {}, {"fail": {"gpu-node01": "bandwidth"}}) == 1
    lines = capsys.readouterr().out.splitlines()
    failing = lines.index("REGRESSION newly failing (1):")
    assert lines[failing + 1].startswith(
        f"  gpu-node01  {COPY}[cuda:2]: passed -> failed: GPU 2 (cuda:2, NVIDIA H100 80GB HBM3, "
    )
    assert "): d2d_copy_bandwidth: 2051 GB/s: fail, below 2344 GB/s" in lines[failing + 1]
    worse = lines.index("REGRESSION figures worse beyond their tolerance (1):")
    assert "d2d_copy_bandwidth:" in lines[worse + 1]
    assert "2051 GB/s (-29.9%, tolerance -20%/+15%" in lines[worse + 1]
    assert lines[-1] == (
        "2 regression(s): 1 newly failing, 0 vanished, 1 figure(s) worse beyond tolerance"
    )


def test_exit_code_0_without_regression_and_markdown(tmp_path, capsys):
    assert run_diff(tmp_path, {"fail": {"gpu-node01": "ecc"}}, {}, "--format", "md") == 0
    out = capsys.readouterr().out
    assert out.startswith("## Report diff:")
    assert "### newly passing (1)" in out
    assert f"| gpu-node01 | {ECC} | failed -&gt; passed |" in out  # escaped as summary does
    assert out.rstrip().endswith("**no regressions**")


def test_bad_input_is_exit_code_2_and_one_line(tmp_path, capsys):
    base = write_fleet(tmp_path / "base", nodes=1, gpus=1)[0]
    assert main(["diff", str(base), str(tmp_path / "tonight.xml")]) == 2
    err = capsys.readouterr().err
    assert err == f"harness report diff: {tmp_path / 'tonight.xml'}: no such file\n"


@pytest.mark.parametrize("argv", [["diff", "only-one.xml"], ["diff"], ["frobnicate"], []])
def test_usage_errors_are_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "error:" in err
