"""The rank side of the pool: the loop each rank process runs.

``RankPool`` starts each rank as a fresh interpreter (spawned, never forked) running
``bootstrap(fd)``, with stdout and stderr already on the rank's log file and one end of a
``multiprocessing`` pipe at ``fd``. The rank reads its configuration from the pipe, ignores
SIGINT (the controller decides when ranks end), watches its parent so it never outlives the
controller, joins the pool's process group through a FileStore, and serves tasks one at a
time: import the function, call it with the task's keyword arguments (and ``dist_env`` if
the function takes one), send back a plain-data result.

What a function is and what its exceptions mean is the business of an *adapter*: a module the
pool names (``RankPool(adapter=...)``), imported once in each rank, with

- ``prepare()``: called after the rank joined its process group;
- ``load_function(module, qualname, path)``: the callable to run;
- ``outcome(err) -> (outcome, message) | None``: how a raised exception ends the task
  (``protocol.SKIPPED`` or ``protocol.XFAILED`` with its reason), None for a failure.

The pytest plugin's adapter (``harness.plugin.on_rank``) rewrites the test module's asserts
and reads pytest's skip and xfail exceptions; without one, functions are imported plainly and
every exception is a failure, so this package never needs pytest.
"""

import contextlib
import importlib
import inspect
import os
import signal
import sys
import threading
import time
import traceback
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from harness.rankpool import loading, protocol, stacks
from harness.rankpool.timeouts import set_collective_timeout

# A result's traceback beyond this many characters keeps its head and tail.
MAX_TRACEBACK_CHARS = 30_000


def bootstrap(fd: int) -> None:
    """The rank's whole life: set up, join the process group, serve tasks until told to stop.

    The first message on the pipe is the rank's configuration (plain data, from
    ``RankPool``): rank, world_size, device, backend, timeout, ddp_impl, adapter, store_path,
    stack_path, parent_pid, pdeathsig.
    """
    conn = Connection(fd)
    config = conn.recv()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _guard_parent(config["parent_pid"], config["pdeathsig"])
    stacks.install(config["stack_path"])
    try:
        adapter = _adapter(config.get("adapter"))
        dist_env = _join(config)
        adapter.prepare()
    except BaseException:
        traceback.print_exc()
        conn.send({"kind": "start-failed", "traceback": traceback.format_exc()})
        _exit(1)
    conn.send({"kind": "ready", "pid": os.getpid()})
    _serve(conn, dist_env, adapter)
    _exit(0)


class PlainFunctions:
    """The adapter without one: plain imports, and every exception a failure."""

    @staticmethod
    def prepare() -> None:
        pass

    load_function = staticmethod(loading.load_function)

    @staticmethod
    def outcome(err: BaseException) -> tuple[str, str] | None:
        return None


def _adapter(name: str | None) -> Any:
    return PlainFunctions if name is None else importlib.import_module(name)


def _serve(conn: Connection, dist_env: Any, adapter: Any) -> None:
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the controller is gone
            return
        if task["kind"] == "stop":
            _leave()
            return
        result = run_task(task, dist_env, adapter)
        _release_cached_memory()
        _flush()
        try:
            conn.send(result)
        except Exception as err:  # passed the plain-data check, yet does not pickle
            conn.send(
                result
                | {
                    "outcome": protocol.FAILED,
                    "value": None,
                    "message": f"the rank's result could not be sent: {type(err).__name__}: {err}",
                }
            )


def run_task(task: dict[str, Any], dist_env: Any, adapter: Any = PlainFunctions) -> dict[str, Any]:
    """Run one task on this rank; the result is a plain dict of ``RankResult`` fields."""
    import torch.distributed as dist

    start = time.perf_counter()
    _mirror_controller(task)
    set_collective_timeout(task["pg_timeout"])
    result: dict[str, Any] = {"rank": dist_env.rank, "outcome": protocol.PASSED}
    try:
        function = adapter.load_function(task["module"], task["qualname"], task.get("path"))
        kwargs = dict(task["kwargs"])
        if _takes_dist_env(function):
            kwargs["dist_env"] = dist_env
        value = function(**kwargs)
        protocol.ensure_plain("the return value", value)
        result["value"] = value
    except BaseException as err:  # a test may raise anything, SystemExit included
        result |= _describe(err, adapter.outcome(err))
    if not dist.is_initialized():
        result |= {
            "outcome": protocol.FAILED,
            "message": "the default process group was destroyed by the function",
        }
    result["duration"] = time.perf_counter() - start
    return result


def _release_cached_memory() -> None:
    """Give the GPU back what the task's tensors left in torch's cache: the rank outlives the
    test, and a test after it (usable memory, the pattern test) must find the GPU free."""
    import gc

    import torch

    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def _describe(err: BaseException, judged: tuple[str, str] | None) -> dict[str, Any]:
    if judged is not None:
        outcome, message = judged
        return {"outcome": outcome, "message": message}
    # Drop this module's own frame: the traceback starts in the function under test.
    tb = err.__traceback__.tb_next if err.__traceback__ else None
    text = "".join(traceback.format_exception(type(err), err, tb))
    if len(text) > MAX_TRACEBACK_CHARS:
        half = MAX_TRACEBACK_CHARS // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters ...]\n{text[-half:]}"
    return {"outcome": protocol.FAILED, "message": one_line(err), "traceback": text}


def one_line(err: BaseException) -> str:
    """``AssertionError: ranks disagree``: the type and the first line of the message."""
    lines = str(err).strip().splitlines()
    name = type(err).__qualname__
    return f"{name}: {lines[0]}" if lines else name


def _takes_dist_env(function: Any) -> bool:
    try:
        return "dist_env" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _mirror_controller(task: dict[str, Any]) -> None:
    """The controller's import path and working directory, so the rank imports what it does."""
    wanted = task["sys_path"]
    if sys.path != wanted:
        sys.path[:] = [*wanted, *(entry for entry in sys.path if entry not in set(wanted))]
    if task["cwd"] and os.getcwd() != task["cwd"]:
        os.chdir(task["cwd"])


def _join(config: dict[str, Any]) -> Any:
    import torch
    import torch.distributed as dist

    from harness.rankpool.env import DistEnv

    device = torch.device(config["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store = dist.FileStore(config["store_path"], config["world_size"])
    extra: dict[str, Any] = {"device_id": device} if config["backend"] == "nccl" else {}
    dist.init_process_group(
        config["backend"],
        store=store,
        rank=config["rank"],
        world_size=config["world_size"],
        timeout=timedelta(seconds=config["timeout"]),
        **extra,
    )
    return DistEnv(
        rank=config["rank"],
        world_size=config["world_size"],
        device=device,
        backend=config["backend"],
        ddp_impl=config["ddp_impl"],
        local_rank=config["rank"],
        local_world_size=config["world_size"],
    )


def _leave() -> None:
    import torch.distributed as dist

    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        traceback.print_exc()


def _guard_parent(parent_pid: int, pdeathsig: bool) -> None:
    """End this rank when the controller ends, however it ends: by the kernel's parent-death
    signal where there is one, else by a thread watching the parent."""
    armed = pdeathsig and sys.platform == "linux" and _arm_parent_death_signal()
    if os.getppid() != parent_pid:
        _exit(1)
    if not armed:
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True
        ).start()


def _arm_parent_death_signal() -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:  # its name is stacks.WATCHDOG_FRAME
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            _exit(1)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _exit(code: int) -> None:
    """Leave without interpreter shutdown: no atexit handlers or destructors that could block
    on a peer (a process group's, say)."""
    _flush()
    os._exit(code)
