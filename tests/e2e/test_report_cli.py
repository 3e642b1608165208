"""``python -m harness.report`` as a user runs it, on the JUnit of real pytest runs of a tiny
suite (two nights) and on a generated fleet."""

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.pytest_run import REPO, clean_env, run_pytest
from tests.report_data import write_fleet

SUITE = """
import os
import pytest

def test_copy_bandwidth(figures, node_gpus):
    figures.record("d2d_copy_bandwidth", float(os.environ["BANDWIDTH"]), "GB/s", gpu=node_gpus[0])

def test_ecc():
    assert os.environ["ECC_ERRORS"] == "0", "GPU 3: ecc_volatile_uncorrected = 2, limit 0"

@pytest.mark.skip(reason="needs a CUDA GPU")
def test_matmul():
    pass
"""


def report(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.report", *args],
        cwd=REPO,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Last night (all good) and tonight (ECC errors, copy bandwidth down 25%), as pytest
    writes them on a node given by a snapshot."""
    directory = tmp_path_factory.mktemp("nights")
    (directory / "test_node.py").write_text(SUITE)
    snapshot = REPO / "harness" / "profiles" / "shipped" / "snapshots" / "h100-sxm-x8.json"
    files = []
    for night, bandwidth, ecc in (("last", "2950", "0"), ("tonight", "2212", "2")):
        junit = directory / f"{night}.xml"
        env = {**clean_env(), "BANDWIDTH": bandwidth, "ECC_ERRORS": ecc}
        args = [
            "test_node.py",
            f"--junitxml={junit}",
            f"--fake-node={snapshot}",
            "--profile=h100-sxm-8x",
            "--devices=cpu:2",
        ]
        result = run_pytest(args, cwd=directory, env=env)
        assert result.returncode in (0, 1), result.stdout + result.stderr
        files.append(junit)
    return files


def test_merge_then_diff_of_two_real_nights(nights, tmp_path):
    last, tonight = nights
    merged = {}
    for night, path in (("last", last), ("tonight", tonight)):
        merged[night] = tmp_path / f"merged-{night}.xml"
        result = report("merge", str(path), "-o", str(merged[night]))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{merged[night]}: 1 suites, 3 tests from 1 files\n"
    (suite,) = ET.parse(merged["tonight"]).getroot()
    assert suite.get("name") == "h100x8-example"
    result = report("diff", str(merged["last"]), str(merged["tonight"]))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "  h100x8-example  test_node::test_ecc: passed -> failed: AssertionError: GPU 3: " in (
        "\n".join(lines)
    )
    worse = lines[lines.index("REGRESSION figures worse beyond their tolerance (1):") + 1]
    assert worse == (
        "  h100x8-example  test_node::test_copy_bandwidth: d2d_copy_bandwidth: "
        "2950 GB/s -> 2212 GB/s (-25.0%, tolerance -20%/+15% (warn beyond 10%))"
    )
    assert lines[-1].startswith("3 regression(s): 2 newly failing")  # ECC, and the copy
    # the node's own file against the merged one of the same night: nothing changed
    assert report("diff", str(last), str(merged["last"])).returncode == 0


def test_a_fleet_merged_with_a_bad_file_then_outliers(tmp_path):
    paths = write_fleet(
        tmp_path / "in",
        nodes=8,
        gpus=2,
        ranks=1,
        slow={("gpu-node06", 1): 0.92},
        corrupt={"gpu-node08"},
    )
    out = tmp_path / "merged.xml"
    result = report("merge", *map(str, paths), "-o", str(out))
    assert result.returncode == 2
    assert result.stderr == (
        f"harness report merge: {paths[-2]}: not valid XML: unclosed token: line 1, column "
        f"{result.stderr.rsplit('column ', 1)[1]}"
    )
    assert not out.exists()
    result = report("merge", *map(str, paths), "-o", str(out), "--skip-bad")
    assert result.returncode == 0
    assert result.stderr.startswith(f"warning: {paths[-2]}: not valid XML")
    result = report("outliers", str(out))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "5 fleet outlier(s) among 15 runs"
    # one headline naming GPU 1 (its copy, host copy, matmul and both directions of its one
    # link), then each figure indented
    assert lines[0].startswith("gpu-node06: GPU 1 (cuda:1, NVIDIA H100 80GB HBM3, GPU-")
    assert "is in 5 of 5 outlying figures (" in lines[0]
    assert "p2p_bandwidth in 2 pairs" in lines[0]
    assert len(lines) == 7
    assert all(line.startswith("  gpu-node06: suites.hardware.") for line in lines[1:-1])


def test_summary_without_the_report_extra_says_how_to_install_it(tmp_path, nights):
    blocked = tmp_path / "blocked"
    for name in ("jinja2", "matplotlib"):  # as if the extra were not installed
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {name}'!r}, name={name!r})\n"
        )
    env = {**clean_env(), "PYTHONPATH": f"{blocked}"}
    result = report("summary", str(nights[0]), "-o", str(tmp_path / "s.html"), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "summary needs the report extra: pip install 'gpu-dp-harness[report]'"
    )
    assert result.stderr.count("\n") == 1
    # merge, diff and outliers do not need it
    assert report("outliers", str(nights[0]), env=env).returncode == 0
