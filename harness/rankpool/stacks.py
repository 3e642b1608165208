"""Python stacks of a running rank, through faulthandler.

The rank registers faulthandler on ``SIGUSR1`` with its own stack file; the controller
signals it and reads what was appended. faulthandler writes from its C signal handler, so
this works while the rank is blocked in C (a collective waiting for a peer) as well as in
Python. Fatal signals (SIGSEGV, SIGABRT...) dump to the rank's stderr, its log file.
"""

import faulthandler
import os
import signal
import time
from typing import IO

# Frames of this function belong to the rank's parent watchdog, not to the test.
WATCHDOG_FRAME = "_watch_parent"
# Frames of the rank's own loop, under every test's frames: left out of reported stacks.
_WORKER_FRAMES = ('harness/rankpool/worker.py", line', 'File "<string>", line 1 in <module>')

_stack_file: IO[str] | None = None


def install(stack_path: str) -> None:
    """Rank side: dump every thread's stack to ``stack_path`` on SIGUSR1, and to stderr on a
    fatal signal."""
    global _stack_file
    _stack_file = open(stack_path, "a")  # noqa: SIM115 - lives as long as the process
    faulthandler.register(signal.SIGUSR1, file=_stack_file, all_threads=True, chain=False)
    faulthandler.enable(all_threads=True)


def request(pid: int, stack_path: str, *, wait: float = 2.0) -> str:
    """Controller side: signal rank ``pid`` and return the stack it dumped ('' if none came)."""
    start = _size(stack_path)
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return ""
    deadline = time.monotonic() + wait
    size = start
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = _size(stack_path)
        if now > start and now == size:  # grew, then stopped growing: the dump is complete
            break
        size = now
    with open(stack_path, errors="replace") as stacks:
        stacks.seek(start)
        return without_machinery(stacks.read())


def without_machinery(dump: str) -> str:
    """The dump without the rank's watchdog thread and the frames of its serving loop."""
    blocks: list[list[str]] = []
    for line in dump.splitlines():
        if (not line.startswith(" ") and line.strip()) or not blocks:
            blocks.append([])
        blocks[-1].append(line)
    kept = [block for block in blocks if not any(WATCHDOG_FRAME in line for line in block)]
    lines = [line for block in kept for line in block]
    return "\n".join(line for line in lines if not any(f in line for f in _WORKER_FRAMES)).strip()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
