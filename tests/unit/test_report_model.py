"""harness.report.model: the harness's JUnit read into runs, cases and figures."""

import textwrap
from pathlib import Path

import pytest

from harness.report.model import (
    ReportError,
    direction,
    load_report,
    parse_quantity,
    parse_tolerance,
)
from tests.pytest_run import REPO, clean_env, run_pytest
from tests.report_data import H100, labels, write_fleet

TINY_SUITE = """
import pytest

def test_copy_bandwidth(figures, node_gpus):
    figures.record("d2d_copy_bandwidth", 2900.0, "GB/s", gpu=node_gpus[3])

def test_ecc():
    assert 2 == 0, "GPU 3: ecc_volatile_uncorrected = 2, limit 0"

def test_needs_cuda():
    pytest.skip("needs a CUDA GPU")
"""


@pytest.fixture(scope="module")
def real_junit(tmp_path_factory) -> Path:
    """A JUnit file from a real pytest run with the harness plugin and a fake 8-GPU node."""
    directory = tmp_path_factory.mktemp("real")
    (directory / "test_tiny.py").write_text(TINY_SUITE)
    junit = directory / "junit.xml"
    snapshot = REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h100-sxm-x8.json"
    result = run_pytest(
        [
            "test_tiny.py",
            f"--junitxml={junit}",
            f"--fake-node={snapshot}",
            "--profile=h100-sxm-8x",
            "--devices=cpu:2",
        ],
        cwd=directory,
        env={**clean_env(), "CUDA_VISIBLE_DEVICES": "3,0"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return junit


def test_a_real_pytest_junit_file_reads_as_one_run_of_the_fake_node(real_junit):
    (run,) = load_report([real_junit]).runs
    assert run.node == "h100x8-example"  # node.host of the snapshot, not this machine
    assert run.rank is None
    assert run.label == "h100x8-example"
    assert run.gpu_model == H100
    assert run.prop("devices") == "cpu:2"
    outcomes = {case.name: case.outcome for case in run.cases}
    assert outcomes == {
        "test_copy_bandwidth": "passed",
        "test_ecc": "failed",
        "test_needs_cuda": "skipped",
    }
    ecc = next(case for case in run.cases if case.name == "test_ecc")
    assert "ecc_volatile_uncorrected = 2, limit 0" in ecc.message
    assert ecc.check == "test_tiny::test_ecc"
    skipped = next(case for case in run.cases if case.name == "test_needs_cuda")
    assert skipped.message == "needs a CUDA GPU"


def test_a_recorded_metric_becomes_a_figure_with_reference_and_tolerance(real_junit):
    (run,) = load_report([real_junit]).runs
    case = next(case for case in run.cases if case.name == "test_copy_bandwidth")
    (figure,) = case.figures
    assert (figure.name, figure.value, figure.unit) == ("d2d_copy_bandwidth", 2900.0, "GB/s")
    assert figure.reference == 2930.0
    assert figure.tolerance_pct() == (20.0, 15.0)
    assert figure.verdict == "pass"
    assert figure.text == "2900 GB/s"
    (uuid,) = figure.gpus
    gpu = run.gpu(uuid)
    assert (gpu.nvml_index, gpu.cuda_index) == (3, 0)  # CUDA_VISIBLE_DEVICES=3,0
    assert gpu.label == (
        "GPU 3 (cuda:0, NVIDIA H100 80GB HBM3, GPU-7c1e4b20-3f5a-4d8e-b6c1-0a9d2e5f8303, "
        "00000000:5D:00.0)"
    )


def test_judged_figures_and_torchrun_ranks_of_generated_files(tmp_path):
    paths = write_fleet(tmp_path, nodes=2, gpus=2, ranks=2)
    report = load_report(paths)
    assert report.nodes() == labels(2, ranks=2)
    assert report.nodes()[1:3] == ["gpu-node01/rank0", "gpu-node01/rank1"]
    rank3 = report.runs[-1]
    assert (rank3.node, rank3.rank) == ("gpu-node02", "3")
    copy = next(c for c in report.runs[0].cases if "test_copy_within_a_gpu[cuda:1]" in c.check)
    (figure,) = copy.figures
    assert figure.unit == "GB/s"
    assert figure.reference == 2930.0
    assert figure.verdict == "pass"
    assert figure.tolerance_pct() == (20.0, 15.0)  # "-20%/+15% (warn beyond 10%)"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "no such file"),
        ("", "not valid XML: no element found"),
        ("<testsuites><testsuite name='x'><testcase", "not valid XML"),
        ("<html><body>502 Bad Gateway</body></html>", "not a JUnit file: root element is <html>"),
        (
            "<testsuite><testcase classname='a'/></testsuite>",
            "testcase[0]: testcase without a name",
        ),
        (
            "<testsuite><testcase name='t'><properties>"
            "<property name='metric.bw' value='fast GB/s'/></properties></testcase></testsuite>",
            "property metric.bw: not a number with a unit: 'fast GB/s'",
        ),
        ("<testsuite time='soon'/>", "time='soon' is not a number"),
    ],
)
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, content, error):
    path = tmp_path / "junit-node3.xml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as raised:
        load_report([path])
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert error in message
    assert "\n" not in message


def test_a_truncated_generated_file_names_itself(tmp_path):
    paths = write_fleet(tmp_path, nodes=3, gpus=1, corrupt={"gpu-node02"})
    with pytest.raises(ReportError, match=r"junit-gpu-node02\.xml: not valid XML"):
        load_report(paths)


def test_a_bare_testsuite_root_and_a_hostname_only_suite(tmp_path):
    path = tmp_path / "other.xml"
    path.write_text(
        textwrap.dedent("""\
        <testsuite name="pytest" hostname="n1" tests="1"><testcase classname="c" name="t"/>
        </testsuite>""")
    )
    (run,) = load_report([path]).runs
    assert run.node == "n1"
    assert run.gpu_model is None
    assert run.cases[0].check == "c::t"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("92 GB/s", (92.0, "GB/s")),
        ("3", (3.0, "")),
        ("-1.5e3 ms", (-1500.0, "ms")),
        (".5 TFLOP/s", (0.5, "TFLOP/s")),
        ("81559 MiB", (81559.0, "MiB")),
    ],
)
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "GB/s", "fast", "1,5 GB/s"])
def test_parse_quantity_refuses_what_is_not_a_number(text):
    with pytest.raises(ValueError, match="not a number with a unit"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10%", (10.0, 10.0)),
        ("-15%/+10%", (15.0, 10.0)),
        ("-20%/+15% (warn beyond 10%)", (20.0, 15.0)),
        ("2.5%", (2.5, 2.5)),
        ("loose", None),
        ("0.1", None),
    ],
)
def test_parse_tolerance(text, expected):
    assert parse_tolerance(text) == expected


@pytest.mark.parametrize(
    ("unit", "better"),
    [
        ("GB/s", "higher"),
        ("TFLOP/s", "higher"),
        ("samples", "higher"),
        ("ms", "lower"),
        ("C", "lower"),
        ("MiB", "either"),
        ("", "either"),
        ("B", "either"),
    ],
)
def test_direction_of_units(unit, better):
    assert direction(unit) == better
