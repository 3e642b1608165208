"""The rank pool with real processes: results, reuse, skips, failures, hangs, deaths, loopback.

Every pool start costs seconds (each rank imports torch), so one 2-rank pool serves the
module, and each failure scenario ends by checking that the pool was rebuilt (new process
ids) and that the next run passes. The functions the ranks run are this module's
``rank_*`` functions: the ranks import this module by name, as they import test modules.
"""

import ctypes
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from harness.plugin.rank_tests import RANK_ADAPTER
from harness.rankpool.pool import RankPool
from harness.rankpool.protocol import DIED, FAILED, HUNG, PASSED, SKIPPED, NotPlainData
from harness.rankpool.verdict import judge

# --- what the ranks run --------------------------------------------------------------


def rank_info(dist_env, n):
    total = torch.tensor([float(dist_env.rank + n)])
    dist.all_reduce(total)
    print(f"rank {dist_env.rank} of {dist_env.world_size} here")
    return {
        "rank": dist_env.rank,
        "world_size": dist_env.world_size,
        "pid": os.getpid(),
        "device": str(dist_env.device),
        "backend": dist_env.backend,
        "pg_rank": dist.get_rank(),
        "total": total.item(),
    }


def rank_gather(dist_env):
    mine = torch.arange(3) + 10 * dist_env.rank
    gathered = [torch.empty(3, dtype=torch.int64) for _ in range(dist_env.world_size)]
    dist.all_gather(gathered, mine)
    return [tensor.tolist() for tensor in gathered]


def rank_skip(dist_env):
    if dist_env.rank == 1:
        pytest.skip("rank 1 has nothing to check")


def rank_raise_then_wait(dist_env):
    if dist_env.rank == 1:
        raise ValueError(f"rank {dist_env.rank} disagrees")
    dist.barrier()  # rank 1 never gets here


def _sleeping_forever():
    while True:
        time.sleep(0.1)


def rank_hang(dist_env, child_pid_file):
    if dist_env.rank == 0:
        dist.barrier()
    else:
        child = subprocess.Popen(["sleep", "600"])  # a process the test started
        Path(child_pid_file).write_text(str(child.pid))
        _sleeping_forever()


def rank_die(dist_env):
    if dist_env.rank == 0:
        os._exit(3)
    if dist_env.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    ctypes.string_at(0)  # rank 2: a segfault


def rank_pid(dist_env):
    return os.getpid()


# --- the tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    """The pool as the plugin runs tests on it: with pytest's adapter on the ranks."""
    with RankPool(2, timeout=60, adapter=RANK_ADAPTER) as pool:
        yield pool


def run(pool: RankPool, name: str, timeout: float | None = None, **kwargs):
    return pool.run(__name__, name, kwargs, timeout=timeout, path=__file__)


def test_every_rank_returns_its_result(pool):
    results = run(pool, "rank_info", n=3)
    assert [r.outcome for r in results] == [PASSED, PASSED]
    assert [r.value["rank"] for r in results] == [0, 1]
    assert [r.value["pg_rank"] for r in results] == [0, 1]
    for r in results:
        assert r.value["world_size"] == 2
        assert r.value["device"] == "cpu"
        assert r.value["backend"] == "gloo"
        assert r.value["total"] == 3 + 4  # (0 + 3) + (1 + 3)
        assert r.pid == r.value["pid"]
        assert r.output == f"rank {r.rank} of 2 here\n"
    assert judge(results).outcome == PASSED


def test_every_rank_holds_its_own_data(pool):
    results = run(pool, "rank_gather")
    assert [r.value for r in results] == [[[0, 1, 2], [10, 11, 12]]] * 2


def test_pool_is_reused_across_runs(pool):
    first = [r.pid for r in run(pool, "rank_info", n=1)]
    starts = pool.starts
    second = [r.pid for r in run(pool, "rank_info", n=2)]
    assert first == second == pool.pids
    assert pool.starts == starts
    assert len(set(first)) == 2
    assert os.getpid() not in first


def test_skip_in_a_rank_is_a_skip_and_keeps_the_pool(pool):
    pids = [r.pid for r in run(pool, "rank_pid")]
    results = run(pool, "rank_skip")
    assert [r.outcome for r in results] == [PASSED, SKIPPED]
    verdict = judge(results)
    assert verdict.outcome == SKIPPED
    assert verdict.message == "rank 1: rank 1 has nothing to check"
    assert pool.pids == pids


def test_without_an_adapter_the_ranks_know_no_pytest_and_a_skip_is_an_exception():
    with RankPool(2, timeout=60) as plain:
        results = run(plain, "rank_skip")
    assert [r.outcome for r in results] == [PASSED, FAILED]
    assert results[1].message.startswith("Skipped: rank 1 has nothing to check")


def test_exception_names_the_rank_with_its_traceback_and_frees_the_waiting_rank(pool):
    start = time.monotonic()
    results = run(pool, "rank_raise_then_wait", timeout=60)
    assert time.monotonic() - start < 15  # not the 60 s timeout: a grace period after the failure
    assert [r.outcome for r in results] == [HUNG, FAILED]
    assert results[1].message == "ValueError: rank 1 disagrees"
    assert 'in rank_raise_then_wait\n    raise ValueError(f"rank {dist_env.rank} disagrees")' in (
        results[1].traceback
    )
    assert "after rank 1 failed" in results[0].message
    assert "in barrier" in results[0].stack
    message = judge(results).message
    assert message.splitlines()[0].startswith("2-rank test: ")
    assert "rank 1 failed: ValueError: rank 1 disagrees" in message.splitlines()[0]
    assert f"rank 1 (pid {results[1].pid})" in message
    _assert_rebuilt(pool, [r.pid for r in results])


def test_hang_reports_the_stack_of_every_unfinished_rank(pool, tmp_path):
    start = time.monotonic()
    child_pid_file = tmp_path / "child.pid"
    results = run(pool, "rank_hang", timeout=1.5, child_pid_file=str(child_pid_file))
    assert time.monotonic() - start < 1.5 + 10
    assert [r.outcome for r in results] == [HUNG, HUNG]
    assert all(r.message == "did not finish within 1.5 s" for r in results)
    assert "in barrier" in results[0].stack
    assert "in _sleeping_forever" in results[1].stack
    assert "in rank_hang" in results[1].stack
    message = judge(results).message
    assert message.splitlines()[0] == "2-rank test: ranks 0, 1 did not finish within 1.5 s"
    for r in results:
        assert f"rank {r.rank} (pid {r.pid})" in message
    assert not _running(int(child_pid_file.read_text()))  # killed with its rank
    _assert_rebuilt(pool, [r.pid for r in results])


def test_deaths_report_exit_code_or_signal_and_the_pool_is_rebuilt():
    with RankPool(3, timeout=60) as pool:
        results = run(pool, "rank_die")
        assert [r.outcome for r in results] == [DIED, DIED, DIED]
        assert [r.exitcode for r in results] == [3, -signal.SIGKILL, -signal.SIGSEGV]
        assert [r.message for r in results] == [
            "exited with code 3",
            "killed by SIGKILL",
            "killed by SIGSEGV",
        ]
        assert "Segmentation fault" in results[2].output
        assert "in rank_die" in results[2].output  # faulthandler's Python stack
        assert "rank 0 died: exited with code 3" in judge(results).message
        _assert_rebuilt(pool, [r.pid for r in results])


def test_arguments_must_be_plain_data(pool):
    with pytest.raises(NotPlainData, match=r"argument 'n' is a torch\.Tensor, not plain data"):
        run(pool, "rank_info", n=torch.ones(1))

    @dataclasses.dataclass
    class Local:  # a dataclass of plain fields, but no rank could import its class
        n: int

    with pytest.raises(NotPlainData, match="the arguments do not pickle"):
        run(pool, "rank_info", n=Local(1))


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc")
def test_ranks_listen_on_loopback_only(pool):
    pids = [r.pid for r in run(pool, "rank_gather")]
    listening = [address for pid in pids for address in _listening_addresses(pid)]
    assert listening, "gloo's ranks listen for their peers; none found"
    assert all(address in ("127.0.0.1", "::1") for address in listening), listening
    store = list(Path(pool._dir).iterdir())
    assert any(path.name == "store" for path in store)  # the FileStore, not a TCPStore


def _assert_rebuilt(pool: RankPool, old_pids: list[int]) -> None:
    assert pool.pids == []  # torn down
    assert not [pid for pid in old_pids if _is_our_child(pid)]  # killed and reaped
    results = run(pool, "rank_info", n=1)
    assert [r.outcome for r in results] == [PASSED] * pool.world_size
    assert not set(pool.pids) & set(old_pids)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _is_our_child(pid: int) -> bool:
    """Whether ``pid`` is a process (a zombie included) whose parent is this process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rpartition(")")[2].split()[1]) == os.getpid()


def _listening_addresses(pid: int) -> list[str]:
    """The local addresses of the TCP sockets process ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    addresses = []
    for table, decode in (("tcp", _ipv4), ("tcp6", _ipv6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                addresses.append(decode(local.split(":")[0]))
    return addresses


def _ipv4(hex_address: str) -> str:
    return ".".join(str(b) for b in reversed(bytes.fromhex(hex_address)))


def _ipv6(hex_address: str) -> str:
    import ipaddress

    words = bytes.fromhex(hex_address)
    # /proc writes each 32-bit word in host (little-endian) order.
    raw = b"".join(words[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(raw))
