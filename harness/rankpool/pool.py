"""The controller side: a pool of W rank processes, started once and reused across runs.

    pool = RankPool(4)                      # CPU ranks, gloo; nothing started yet
    results = pool.run("my.module", "check", {"n": 3}, timeout=30)
    [r.outcome for r in results]            # ['passed', 'passed', 'passed', 'passed']
    pool.close()

``run`` sends the function's module, qualname and keyword arguments (plain data) to every
rank over its pipe and waits for a result from each, the rank's process sentinel, or the
timeout, whichever comes first. A rank that does not finish in time is asked for its stack
(``stacks``) and counted as hung; a rank whose process ends is counted as died, with its exit
code or signal. After any run with a failed, hung or dead rank the process group cannot be
trusted (a peer may be blocked in a collective, or a collective half-matched), so the pool
kills and reaps every rank; the next ``run`` starts a fresh pool.

Each rank is a fresh interpreter, spawned, never forked from the controller (whose CUDA
state, threads and pytest capture it must not inherit). It is started with ``subprocess``
rather than ``multiprocessing``'s spawn, which would re-run the controller's ``__main__`` in
every rank and leave start-up errors on the controller's (possibly captured) stderr: here
a rank's stdout and stderr go to its own log file from its first byte, and a
``multiprocessing`` pipe end is passed to it by descriptor.

The ranks rendezvous through a ``FileStore`` in the pool's private temporary directory, use
loopback for gloo and NCCL sockets, and talk to the controller over unnamed pipes: the pool
listens on no network address.
"""

import atexit
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from harness.devices import DeviceSet
from harness.rankpool import protocol, stacks
from harness.rankpool.layout import RankLayout, plan_ranks
from harness.rankpool.protocol import DIED, FAILED, HUNG, PASSED, RankResult
from harness.rankpool.timeouts import (
    DEFAULT_TIMEOUT,
    GRACE_AFTER_FAILURE,
    MIN_START_TIMEOUT,
    collective_timeout,
)

# How much of a rank's output a result carries.
MAX_OUTPUT_BYTES = 64 * 1024
# Seconds a stopping rank gets to leave its process group before it is killed.
STOP_WAIT = 3.0
# Variables every rank gets unless the controller's environment already sets them.
RANK_ENV_DEFAULTS = {
    "GLOO_SOCKET_IFNAME": "lo",
    "NCCL_SOCKET_IFNAME": "lo",
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    "OMP_NUM_THREADS": "1",  # as torchrun: W ranks share the node's cores
}
# What a rank runs: a fresh interpreter with the controller's import path.
_BOOTSTRAP = (
    "import sys; sys.path[:] = {path!r}; "
    "from harness.rankpool.worker import bootstrap; bootstrap({fd})"
)


class PoolStartError(RuntimeError):
    """The ranks could not be started or could not form their process group."""


@dataclass
class _Rank:
    rank: int
    process: subprocess.Popen
    conn: Connection
    log_path: str
    stack_path: str
    sentinel: int | None  # a pidfd, readable once the process has ended (Linux)
    eof: bool = False  # its pipe is closed; only its process is still worth waiting on
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.process.pid

    def exitcode(self, wait: float = 0.0) -> int | None:
        try:
            return self.process.wait(wait) if wait else self.process.poll()
        except subprocess.TimeoutExpired:
            return None


class RankPool:
    """W rank processes sharing one default process group, reused across ``run`` calls.

    ``devices`` (a ``DeviceSet``; ``None`` for the CPU) decides each rank's device and the
    backend (see ``layout``). ``timeout`` is the default for ``run``. ``ddp_impl`` is the
    ``--ddp-impl`` spec ranks resolve for ``DistEnv.ddp``. ``adapter`` names a module the ranks
    import to load and judge the functions they run (``worker``): the pytest plugin's
    ``harness.plugin.on_rank`` for tests; None for plain functions. Not thread-safe: one
    ``run`` at a time. Started lazily by the first ``run`` (or ``start``).
    """

    def __init__(
        self,
        world_size: int,
        *,
        devices: DeviceSet | None = None,
        ddp_impl: str = "reference",
        timeout: float = DEFAULT_TIMEOUT,
        start_timeout: float | None = None,
        adapter: str | None = None,
    ) -> None:
        self.layout: RankLayout = plan_ranks(devices, world_size)
        self.world_size = world_size
        self.ddp_impl = ddp_impl
        self.adapter = adapter
        self.timeout = timeout
        self.start_timeout = start_timeout or max(MIN_START_TIMEOUT, timeout)
        self.starts = 0  # how many times ranks were started: 1 + rebuilds
        self._ranks: list[_Rank] = []
        self._dir: str | None = None
        self._owner = os.getpid()

    @property
    def backend(self) -> str:
        return self.layout.backend

    @property
    def started(self) -> bool:
        return bool(self._ranks) and self._owner == os.getpid()

    @property
    def pids(self) -> list[int]:
        """The ranks' process ids, in rank order; empty when not started."""
        return [r.pid for r in self._ranks] if self.started else []

    def start(self) -> None:
        """Start the ranks and wait until every one has joined the process group."""
        if self.started:
            return
        self._forget_inherited()
        self.starts += 1
        problems: list[str] = []
        try:
            self._spawn()
            deadline = time.monotonic() + self.start_timeout
            pending = {r.rank: r for r in self._ranks}
            while pending:
                ready = self._wait(pending.values(), deadline)
                if not ready and time.monotonic() >= deadline:
                    for r in pending.values():
                        stack = stacks.request(r.pid, r.stack_path)
                        problems.append(
                            f"rank {r.rank} (pid {r.pid}) did not join the process group "
                            f"within {self.start_timeout:g} s; its stack:\n{stack or '(none)'}"
                        )
                    break
                for r in ready:
                    message = self._receive(r)
                    if message is None:
                        continue
                    del pending[r.rank]
                    if message["kind"] == "start-failed":
                        problems.append(
                            f"rank {r.rank} (pid {r.pid}) failed to start:\n{message['traceback']}"
                        )
                    elif message["kind"] == "died":
                        problems.append(
                            f"rank {r.rank} (pid {r.pid}) {message['message']} while "
                            f"starting; its output:\n{_tail(_read_from(r.log_path, 0))}"
                        )
                if problems:
                    break
        except BaseException:
            self._teardown()
            raise
        if problems:
            where = (
                f"{self.world_size} {self.layout.backend} ranks on {', '.join(self.layout.devices)}"
            )
            self._teardown()
            raise PoolStartError(f"starting {where} failed:\n" + "\n".join(problems))

    def run(
        self,
        module: str,
        qualname: str,
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        path: str | None = None,
    ) -> list[RankResult]:
        """Call ``module.qualname(**kwargs)`` on every rank; one ``RankResult`` per rank.

        The function also gets ``dist_env`` (a ``DistEnv``) if it has a parameter of that
        name. ``path`` is the module's file, for a module imported from a file (a test
        module). ``kwargs`` and return values must be plain data (``protocol``): otherwise
        ``NotPlainData`` here, or a failed result from the rank.
        """
        kwargs = dict(kwargs or {})
        for name, value in kwargs.items():
            protocol.ensure_plain(f"argument {name!r}", value)
        timeout = self.timeout if timeout is None else timeout
        task = {
            "kind": "run",
            "module": module,
            "qualname": qualname,
            "path": path,
            "kwargs": kwargs,
            "pg_timeout": collective_timeout(timeout),
            "sys_path": list(sys.path),
            "cwd": os.getcwd(),
        }
        try:  # once for every rank, and before any rank is started
            payload = pickle.dumps(task)
        except Exception as err:  # plain-looking data that does not pickle (a local class)
            raise protocol.NotPlainData(f"the arguments do not pickle: {err}") from err
        self.start()
        ranks = list(self._ranks)
        offsets = {r.rank: _size(r.log_path) for r in ranks}
        try:
            for r in ranks:
                with contextlib.suppress(OSError):  # it died; its sentinel says how
                    r.conn.send_bytes(payload)
            results = self._collect(ranks, timeout)
        except BaseException:  # KeyboardInterrupt included: leave no rank behind
            self._teardown()
            raise
        results = [
            dataclasses.replace(result, output=_read_from(r.log_path, offsets[r.rank]))
            for r, result in zip(ranks, results)
        ]
        if any(result.outcome in (FAILED, HUNG, DIED) for result in results):
            self._teardown()
        return results

    def close(self) -> None:
        """Stop the ranks (they leave the process group), killing any that do not stop."""
        if not self.started:
            self._forget_inherited()
            return
        for r in self._ranks:
            with contextlib.suppress(OSError):
                r.conn.send({"kind": "stop"})
        deadline = time.monotonic() + STOP_WAIT
        for r in self._ranks:
            r.exitcode(max(0.01, deadline - time.monotonic()))
        self._teardown()

    def __enter__(self) -> "RankPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="harness-pool-")
        _live_pools.add(self)
        env = os.environ | {
            key: os.environ.get(key, value) for key, value in RANK_ENV_DEFAULTS.items()
        }
        env["PYTHONUNBUFFERED"] = "1"  # output reaches the log before a hang or a crash
        on_main_thread = threading.current_thread() is threading.main_thread()
        for rank, device in enumerate(self.layout.devices):
            parent_end, child_end = multiprocessing.Pipe(duplex=True)
            log_path = os.path.join(self._dir, f"rank{rank}.log")
            stack_path = os.path.join(self._dir, f"rank{rank}.stacks")
            command = _BOOTSTRAP.format(path=list(sys.path), fd=child_end.fileno())
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-c", command],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(child_end.fileno(),),
                    env=env,
                    # Out of the terminal's process group: Ctrl-C reaches the controller,
                    # which ends the ranks.
                    start_new_session=True,
                )
            child_end.close()
            r = _Rank(rank, process, parent_end, log_path, stack_path, _pidfd(process.pid))
            self._ranks.append(r)
            parent_end.send(
                {
                    "rank": rank,
                    "world_size": self.world_size,
                    "device": device,
                    "backend": self.layout.backend,
                    "timeout": collective_timeout(self.timeout),
                    "ddp_impl": self.ddp_impl,
                    "adapter": self.adapter,
                    "store_path": os.path.join(self._dir, "store"),
                    "stack_path": stack_path,
                    "parent_pid": os.getpid(),
                    # The parent-death signal follows the thread that started the process.
                    "pdeathsig": on_main_thread,
                }
            )

    def _collect(self, ranks: list[_Rank], timeout: float) -> list[RankResult]:
        start = time.monotonic()
        deadline = start + timeout
        pending = {r.rank: r for r in ranks}
        results: dict[int, RankResult] = {}
        first_bad: RankResult | None = None
        first_bad_at = 0.0
        while pending:
            limit = (
                deadline if first_bad is None else min(deadline, first_bad_at + GRACE_AFTER_FAILURE)
            )
            ready = self._wait(pending.values(), limit)
            if not ready and time.monotonic() >= limit:
                break
            for r in ready:
                message = self._receive(r)
                if message is None:
                    continue
                del pending[r.rank]
                result = self._result(r, message)
                results[r.rank] = result
                if not result.ok and first_bad is None:
                    first_bad, first_bad_at = result, time.monotonic()
        for r in pending.values():
            if first_bad is not None and time.monotonic() < deadline:
                why = (
                    f"did not finish within {GRACE_AFTER_FAILURE:g} s after rank "
                    f"{first_bad.rank} {_verb(first_bad)}"
                )
            else:
                why = f"did not finish within {timeout:g} s"
            stack = stacks.request(r.pid, r.stack_path)
            results[r.rank] = RankResult(
                rank=r.rank,
                outcome=HUNG,
                pid=r.pid,
                message=why,
                stack=stack or "(no stack came back)",
                duration=time.monotonic() - start,
            )
        return [results[r.rank] for r in ranks]

    @staticmethod
    def _wait(ranks: Any, deadline: float) -> list[_Rank]:
        """The ranks with a message or an ended process, waiting until ``deadline`` at most."""
        owners: dict[Any, _Rank] = {}
        polled = []  # ranks without a pidfd: their end is seen by polling
        for r in ranks:
            if r.sentinel is not None:
                owners[r.sentinel] = r
            else:
                polled.append(r)
            if not r.eof:
                owners[r.conn] = r
        timeout = max(0.0, deadline - time.monotonic())
        ready = wait(list(owners), timeout=min(timeout, 0.2) if polled else timeout)
        found = {id(owners[obj]): owners[obj] for obj in ready}
        found |= {id(r): r for r in polled if r.exitcode() is not None}
        return list(found.values())

    @staticmethod
    def _receive(r: _Rank) -> dict[str, Any] | None:
        """The rank's next message, a ``died`` message if its process ended, else None."""
        if not r.eof and r.conn.poll():
            try:
                return r.conn.recv()
            except (EOFError, OSError):
                r.eof = True
        code = r.exitcode(1.0 if r.eof else 0.0)
        if code is None:
            return None
        return {"kind": "died", "exitcode": code, "message": describe_exit(code)}

    @staticmethod
    def _result(r: _Rank, message: dict[str, Any]) -> RankResult:
        if message.get("kind") == "died":
            return RankResult(
                rank=r.rank,
                outcome=DIED,
                pid=r.pid,
                message=message["message"],
                exitcode=message["exitcode"],
            )
        fields = {key: value for key, value in message.items() if key != "kind"}
        return RankResult(pid=r.pid, **fields)

    def _teardown(self) -> None:
        """Kill and reap every rank, with any process it started; remove the pool's directory."""
        if self._owner != os.getpid():
            self._forget_inherited()
            return
        for r in self._ranks:
            # Each rank leads its own process group (its own session): the group's other
            # members are processes the test started (data loader workers, say).
            with contextlib.suppress(OSError):
                os.killpg(r.pid, signal.SIGKILL)
            if r.exitcode() is None:
                r.process.kill()
        for r in self._ranks:
            r.exitcode(10.0)
            r.conn.close()
            if r.sentinel is not None:
                os.close(r.sentinel)
        self._ranks = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _live_pools.discard(self)

    def _forget_inherited(self) -> None:
        """In a process forked from the pool's owner, the ranks are not ours: drop them
        without signalling them (they are the owner's)."""
        if self._owner != os.getpid():
            self._ranks = []
            self._dir = None
            self._owner = os.getpid()


def describe_exit(code: int) -> str:
    """``exited with code 3``, ``killed by SIGKILL``."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _verb(result: RankResult) -> str:
    return {DIED: "died", PASSED: "passed"}.get(result.outcome, result.outcome)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3+: the pool polls instead
        return None


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_from(path: str, offset: int) -> str:
    """What was appended to ``path`` since ``offset`` (its last ``MAX_OUTPUT_BYTES``)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            end = log.tell()
            log.seek(max(offset, end - MAX_OUTPUT_BYTES))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(none)"


# Pools not closed by their owner are closed at interpreter exit, before multiprocessing's
# own exit handler (registered earlier, so run later) would join ranks still serving.
_live_pools: "weakref.WeakSet[RankPool]" = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_live_pools):
        with contextlib.suppress(Exception):
            pool._teardown()
