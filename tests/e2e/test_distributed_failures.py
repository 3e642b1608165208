"""Distributed tests end to end: failures are results, never hangs, in the terminal and JUnit.

Real pytest runs in subprocesses on a throwaway suite of 2-rank tests: one that passes, a
hang, a rank that kills itself, a skip inside a rank, a rank-specific assert; each failure
is followed by a test that must pass on the rebuilt pool. A second run spreads a few
distributed tests over two pytest-xdist workers, each with its own pool. Both runs start
together once per module; the tests read their results.
"""

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from tests.pytest_run import clean_env, run_pytest

REPO = Path(__file__).resolve().parents[2]

SUITE = """
import os
import signal
import time

import pytest
import torch
import torch.distributed as dist


def wait_forever():
    while True:
        time.sleep(0.1)


def log_pid():
    with open(os.environ["POOL_LOG"], "a") as log:
        print(os.environ.get("PYTEST_XDIST_WORKER", "-"), os.getpid(), file=log)


@pytest.mark.distributed(world_size=2)
@pytest.mark.parametrize("n", [3])
def test_first_passes(dist_env, n):
    log_pid()
    total = torch.tensor([dist_env.rank + n])
    dist.all_reduce(total)
    assert total.item() == 2 * n + 1


@pytest.mark.distributed(world_size=2, timeout=3)
def test_hang(dist_env):
    if dist_env.rank == 0:
        dist.barrier()  # rank 1 never gets there
    else:
        wait_forever()


@pytest.mark.distributed(world_size=2)
def test_after_hang_passes(dist_env):
    log_pid()
    dist.barrier()


@pytest.mark.distributed(world_size=2)
def test_crash(dist_env):
    if dist_env.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()


@pytest.mark.distributed(world_size=2)
def test_after_crash_passes(dist_env):
    log_pid()
    dist.barrier()


@pytest.mark.distributed(world_size=2)
def test_skip_inside_a_rank(dist_env):
    pytest.skip(f"nothing to check on {dist_env.backend}")


@pytest.mark.distributed(world_size=0)
def test_bad_marker(dist_env):
    pass


@pytest.fixture
def weights():
    return torch.ones(3)


@pytest.mark.distributed(world_size=2)
def test_tensor_argument(dist_env, weights):
    pass


def test_dist_env_without_marker(dist_env):
    pass


@pytest.mark.distributed(world_size=2)
def test_rank_assert(dist_env):
    print(f"rank {dist_env.rank} checking")
    values = [dist_env.rank, 7]
    assert values == [0, 7], "ranks disagree"
"""

XDIST_SUITE = """
import os

import pytest
import torch
import torch.distributed as dist


@pytest.mark.distributed(world_size=2)
@pytest.mark.parametrize("n", range(4))
def test_sum(dist_env, n):
    total = torch.tensor([dist_env.rank + n])
    dist.all_reduce(total)
    assert total.item() == 2 * n + 1
    with open(os.environ["XDIST_POOL_LOG"], "a") as log:
        print(os.environ["PYTEST_XDIST_WORKER"], os.getpid(), file=log)
"""

EXPECTED = {
    "test_first_passes[3]": "passed",
    "test_hang": "failed",
    "test_after_hang_passes": "passed",
    "test_crash": "failed",
    "test_after_crash_passes": "passed",
    "test_skip_inside_a_rank": "skipped",
    "test_bad_marker": "error",
    "test_tensor_argument": "failed",
    "test_dist_env_without_marker": "error",
    "test_rank_assert": "failed",
}


def run_suite(suite: Path, args: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    start = time.monotonic()
    done = run_pytest(args, cwd=suite, env=env)
    return time.monotonic() - start, done.stdout + done.stderr, done.returncode


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    suite = tmp_path_factory.mktemp("dist_suite")
    (suite / "pytest.ini").write_text("[pytest]\njunit_family = xunit2\n")
    (suite / "test_failures.py").write_text(SUITE)
    (suite / "test_xdist.py").write_text(XDIST_SUITE)
    return suite


@pytest.fixture(scope="module")
def runs(suite: Path) -> Iterator[dict[str, Future]]:
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["POOL_LOG"] = str(suite / "pools.log")
    env["XDIST_POOL_LOG"] = str(suite / "xdist-pools.log")
    plain = ["test_failures.py", "--devices", "cpu:2", "--junitxml", str(suite / "plain.xml")]
    xdist = ["test_xdist.py", "-n", "2", "--junitxml", str(suite / "xdist.xml")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "plain": pool.submit(run_suite, suite, plain, env),
            "xdist": pool.submit(run_suite, suite, xdist, env),
        }


def cases(path: Path) -> dict[str, object]:
    [testsuite] = JUnitXml.fromfile(str(path))
    return {case.name: case for case in testsuite}


def outcome(case) -> str:
    for result in case.result:
        if isinstance(result, Failure):
            return "failed"
        if isinstance(result, Error):
            return "error"
        if isinstance(result, Skipped):
            return "skipped"
    return "passed"


def failure_text(case) -> str:
    [failure] = [result for result in case.result if isinstance(result, Failure)]
    return failure.text or ""


@pytest.fixture(scope="module")
def plain(runs, suite) -> dict[str, object]:
    wall, output, code = runs["plain"].result()
    assert code == 1, output  # some tests failed, none errored the run
    # About 15 s on an idle 2-core machine; the bound only catches a run that waited out
    # something (a hang not cut at its 3 s timeout, a pool that never came up).
    assert wall < 90, f"the run took {wall:.1f} s"
    return cases(suite / "plain.xml")


def test_every_outcome_is_a_result_in_junit(plain):
    assert {name: outcome(case) for name, case in plain.items()} == EXPECTED


def test_a_hang_fails_naming_the_ranks_with_their_stacks(plain):
    text = failure_text(plain["test_hang"])
    assert text.splitlines()[0] == "2-rank test: ranks 0, 1 did not finish within 3 s"
    assert "==== rank 0 (pid " in text
    assert "==== rank 1 (pid " in text
    assert "in barrier" in text
    assert "in wait_forever" in text
    line = SUITE.splitlines().index("        wait_forever()") + 1
    assert f"line {line} in test_hang" in text  # rank 1's frame in the test, with its line


def test_a_killed_rank_fails_with_its_signal(plain):
    text = failure_text(plain["test_crash"])
    assert "rank 1 died: killed by SIGKILL" in text.splitlines()[0]


def test_the_pool_is_reused_and_rebuilt_after_each_failure(plain, suite):
    lines = (suite / "pools.log").read_text().split()
    pids = [int(pid) for pid in lines[1::2]]
    # Three passing tests, one after the start and one after each rebuild: 3 pools of 2.
    assert len(pids) == 6
    assert len(set(pids)) == 6


def test_a_failing_rank_is_named_with_its_traceback_and_output(plain):
    text = failure_text(plain["test_rank_assert"])
    assert text.splitlines()[0] == "2-rank test: rank 1 failed: AssertionError: ranks disagree"
    assert text.splitlines()[1] == "rank 0 passed"
    assert 'assert values == [0, 7], "ranks disagree"' in text
    assert "assert [1, 7] == [0, 7]" in text  # pytest's assertion rewriting, in the rank
    assert "rank 1 checking" in text  # the tail of its output


def test_misuse_is_one_clear_line(plain):
    [error] = plain["test_bad_marker"].result
    assert (
        "test_failures.py::test_bad_marker: @pytest.mark.distributed(world_size=N, "
        "timeout=None): world_size must be an integer >= 1, got 0"
    ) in error.message
    assert failure_text(plain["test_tensor_argument"]) == (
        "argument 'weights' of test_tensor_argument is a torch.Tensor, not plain data; only "
        "None, bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size, "
        "enums, paths, dataclasses, and tuples/lists/sets/dicts of those cross to the ranks: "
        "pass plain values and build objects inside the function"
    )
    [error] = plain["test_dist_env_without_marker"].result
    assert (
        "test_failures.py::test_dist_env_without_marker: dist_env needs "
        "@pytest.mark.distributed(world_size=N)"
    ) in error.message


def test_a_skip_inside_a_rank_is_a_skip(plain):
    [skipped] = plain["test_skip_inside_a_rank"].result
    assert skipped.message == "ranks 0, 1: nothing to check on gloo"


def test_each_xdist_worker_runs_its_own_pool(runs, suite):
    _, output, code = runs["xdist"].result()
    assert code == 0, output
    found = cases(suite / "xdist.xml")
    assert len(found) == 4
    assert {outcome(case) for case in found.values()} == {"passed"}
    lines = (suite / "xdist-pools.log").read_text().split()
    workers = dict(zip(lines[1::2], lines[0::2]))  # rank pid -> xdist worker
    assert set(workers.values()) <= {"gw0", "gw1"}
    # One pool of 2 ranks per worker that ran tests: no rank serves two workers.
    assert len(workers) == 2 * len(set(workers.values()))


def test_no_rank_outlives_its_run(runs, suite):
    for future in runs.values():
        future.result()
    pids = set()
    for log in ("pools.log", "xdist-pools.log"):
        pids |= {int(pid) for pid in (suite / log).read_text().split()[1::2]}
    alive = [pid for pid in pids if _is_rank(pid)]
    assert not alive


def _is_rank(pid: int) -> bool:
    try:
        return b"harness.rankpool.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
