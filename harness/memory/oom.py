"""The out-of-memory boundary under a cap: refused cleanly, recovered from, nothing leaked.

``probe_oom_boundary`` caps the allocator a little above what it holds (a quarter of the free
memory, at most ``MAX_HEADROOM``, so only the cap can refuse), allocates half the headroom
(it must fit), asks for one and a half times the headroom (it must raise
``torch.OutOfMemoryError``, not another error, and not succeed), frees everything, allocates
and fills half the headroom again (the device is usable and the cap still admits what fits),
then lifts the cap. Afterwards ``allocated()`` must be back at its value before the probe, and
the cap back at what it was.
"""

import gc
import math
from dataclasses import dataclass

import torch

from harness.memory.device import DeviceMemory, memory_cap
from harness.memory.sizes import GIB, format_size

MAX_HEADROOM = 4 * GIB
FILL = 0x5A


@dataclass(frozen=True)
class OomProbe:
    cap: int  # bytes the allocator could reserve in all under the cap
    headroom: int  # of which free for the probe
    beyond: int  # the allocation that had to be refused
    problems: tuple[str, ...]


def _fill_and_read(memory: DeviceMemory, size: int) -> bool:
    """Allocate ``size`` bytes, fill them and read them back: the device works."""
    try:
        block = memory.allocate(size)
    except torch.OutOfMemoryError:
        return False
    block.fill_(FILL)
    # min and max are reductions with a scalar result: no second block-sized temporary.
    return int(block.min()) == int(block.max()) == FILL


def probe_oom_boundary(memory: DeviceMemory, headroom: int | None = None) -> OomProbe:
    """Run the probe described in the module docstring; ``problems`` says what went wrong."""
    # Earlier tests' tensors caught in reference cycles would otherwise be collected in the
    # middle of the probe, lowering memory_allocated below the baseline for no fault of it.
    gc.collect()
    memory.release()
    baseline = memory.allocated()
    fraction = memory.fraction()
    if headroom is None:
        free, _ = memory.free_and_total()
        headroom = min(free // 4, MAX_HEADROOM)
    within, beyond = headroom // 2, headroom * 3 // 2
    problems = []
    with memory_cap(memory, memory.reserved() + headroom) as cap:
        try:
            block = memory.allocate(within)
        except torch.OutOfMemoryError:
            block = None
            problems.append(
                f"an allocation of {format_size(within)} under the cap of {format_size(cap)} "
                "ran out of memory"
            )
        try:
            memory.allocate(beyond)
        except torch.OutOfMemoryError:
            pass
        except Exception as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
            problems.append(
                f"an allocation of {format_size(beyond)} beyond the cap of {format_size(cap)} "
                f"raised {type(err).__name__}, not torch.OutOfMemoryError: {first_line}"
            )
        else:
            problems.append(
                f"an allocation of {format_size(beyond)} beyond the cap of {format_size(cap)} "
                "succeeded"
            )
        del block
        memory.release()
        if not _fill_and_read(memory, within):
            problems.append(
                f"after the out-of-memory error, {format_size(within)} under the cap could not "
                "be allocated, filled and read back"
            )
        memory.release()
    allocated = memory.allocated()
    if allocated > baseline:  # less is memory freed by someone else, not a leak
        problems.append(
            f"memory_allocated is {allocated} bytes after the probe, {baseline} before: "
            f"{allocated - baseline} bytes not freed"
        )
    # Read back as allowed bytes / total, so exact only to one byte in the total.
    if not math.isclose(memory.fraction(), fraction, rel_tol=1e-9):
        problems.append(
            f"memory fraction is {memory.fraction()} after the probe, {fraction} before"
        )
    return OomProbe(cap, headroom, beyond, tuple(problems))
