"""How long distributed tests are waited for, and the guards that enforce it.

The per-test timeout (``--dist-timeout``, or the marker's ``timeout=``) is what the
controller waits for a run's results. The process group's timeout is set a little longer,
so that on a hang the controller, not a collective's timeout error, ends the run: it then
reports the Python stack of every rank that did not finish.
"""

import contextlib
import faulthandler
from collections.abc import Iterator
from datetime import timedelta

# Seconds. Well under NCCL's 30-minute watchdog, long enough for a slow first CUDA call.
DEFAULT_TIMEOUT = 120.0
# The process group's timeout is the test's plus this.
COLLECTIVE_MARGIN = 5.0
# Once a rank has failed, died or skipped, how long the others get to finish before they
# count as hung (a rank left waiting in a collective for the failed one never would).
GRACE_AFTER_FAILURE = 2.0
# Starting a pool: spawn, import torch, join the process group. At least this long.
MIN_START_TIMEOUT = 120.0
# Under torchrun a rank stuck in C past its test's timeout plus this is ended by faulthandler.
GUARD_MARGIN = 30.0


def collective_timeout(test_timeout: float) -> float:
    return test_timeout + COLLECTIVE_MARGIN


def set_collective_timeout(seconds: float) -> None:
    """Set the default process group's timeout (for collectives issued from now on)."""
    from torch.distributed import distributed_c10d

    set_timeout = getattr(distributed_c10d, "_set_pg_timeout", None)  # torch >= 2.3
    if set_timeout is not None:
        set_timeout(timedelta(seconds=seconds))


@contextlib.contextmanager
def last_resort_guard(seconds: float, fd: int) -> Iterator[None]:
    """Dump every thread's stack to ``fd`` and exit the process if the block runs longer than
    ``seconds``: for a rank stuck in C, where no Python-level timeout can reach it."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
