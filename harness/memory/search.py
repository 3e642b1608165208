"""The largest batch that fits: grow, then bisect, with out-of-memory as the signal.

``largest_batch(fits, ceiling=...)`` only calls ``fits(batch) -> bool``: True when a training
step at that batch ran, False when it ran out of memory. Any other exception is not a memory
answer and propagates (a kernel that cannot launch at a large batch is a finding, not a size).

Real allocators are noisy, and the search allows for what is seen in practice:

- a failure is believed only when it repeats (``retries``): a one-off out-of-memory (another
  stream or process briefly holding memory) must not shrink the answer;
- the answer is run again at the end, so a success that does not repeat (it fitted only
  because of what happened to be free) is not reported; the search then continues below it;
- fragmentation left by one trial must not decide the next: ``oom_trial`` releases the device's
  cached memory after every step (see ``oom_trial``).

With a footprint that grows with the batch, the result is the largest batch that fits. With a
footprint that does not (an algorithm choice needing more workspace at some sizes), the result
is a boundary: a batch that fitted (twice) whose successor did not; never a batch that failed.
"""

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.memory.device import DeviceMemory

# The search stops here: 2**16 - 1 is CUDA's grid limit in the y and z dimensions, and kernels
# that put the batch there (SDPA's memory-efficient and flash attention, pytorch issue 146704)
# fail to launch beyond it. A larger batch would measure launch limits, not memory.
BATCH_CEILING = 2**16 - 1


@dataclass(frozen=True)
class Trial:
    batch: int
    fits: bool


@dataclass(frozen=True)
class SearchResult:
    """``batch`` is 0 when even a batch of one does not fit."""

    batch: int
    ceiling: int
    trials: tuple[Trial, ...]

    @property
    def ceiling_reached(self) -> bool:
        """The search stopped at its ceiling, not at the memory boundary."""
        return self.batch == self.ceiling

    @property
    def first_failure(self) -> int | None:
        """The smallest batch seen to run out of memory."""
        return min((t.batch for t in self.trials if not t.fits), default=None)


def largest_batch(fits: Callable[[int], bool], *, ceiling: int, retries: int = 1) -> SearchResult:
    """Double the batch from 1 until ``fits`` fails or ``ceiling`` is reached, bisect between
    the last batch that fitted and the first that did not, then confirm the answer."""
    if ceiling < 1 or retries < 0:
        raise ValueError(f"need ceiling >= 1 and retries >= 0, got {ceiling} and {retries}")
    trials: list[Trial] = []

    def attempt(batch: int) -> bool:
        for _ in range(1 + retries):
            trials.append(Trial(batch, fits(batch)))
            if trials[-1].fits:
                return True
        return False

    good, bad = 0, None
    batch = 1
    while attempt(batch):
        good = batch
        if batch == ceiling:
            break
        batch = min(2 * batch, ceiling)
    else:
        bad = batch
    while True:
        while bad is not None and bad - good > 1:
            middle = (good + bad) // 2
            if attempt(middle):
                good = middle
            else:
                bad = middle
        if good == 0 or attempt(good):
            return SearchResult(good, ceiling, tuple(trials))
        # The answer did not fit again: search below it, from the largest batch that fitted.
        bad = good
        good = max((t.batch for t in trials if t.fits and t.batch < bad), default=0)


def oom_trial(step: Callable[[int], object], memory: DeviceMemory) -> Callable[[int], bool]:
    """``fits`` for ``largest_batch``: run ``step(batch)``; False on ``torch.OutOfMemoryError``.

    The device's cached memory is released after every step, so each trial starts from the
    same state (the caller releases it before the first, as ``memory_cap`` does). A failed
    step's tensors go with its exception, unless they sit in a reference cycle: only when a
    failure left memory behind does the (slow, 0.1 s) full garbage collection run.
    """

    def fits(batch: int) -> bool:
        before = memory.allocated()
        try:
            step(batch)
        except torch.OutOfMemoryError:
            ok = False
        else:
            ok = True
        if not ok and memory.allocated() > before:
            gc.collect()
        memory.release()
        return ok

    return fits
