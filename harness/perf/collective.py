"""All-reduce bus bandwidth, nccl-tests' way, measured on every rank of a process group.

``allreduce_on_rank`` runs on each rank (the rank pool calls it with ``dist_env``): an
in-place sum all-reduce of S = ``nbytes`` per rank, refilled from a source buffer before each
run (untimed), ``WARMUP`` untimed runs and ``REPEATS`` timed ones with device events. As
nccl-tests does by default, each repeat's time is averaged over the ranks; the figure comes
from the median of those: algbw = S/t, busbw = algbw * 2(n-1)/n. Every rank then checks the
sum it received, element by element.
"""

from dataclasses import dataclass

import torch

from harness.perf.formulas import allreduce_bandwidths
from harness.perf.measurement import Measurement
from harness.perf.sizes import ALLREDUCE_BYTES, REPEATS, WARMUP, describe_bytes
from harness.perf.timing import Timing, measure, timer_for

DTYPE = torch.float32


@dataclass(frozen=True)
class AllReduceResult:
    """One rank's view: the world's figure (the same on every rank) and this rank's check."""

    rank: int
    device: str  # the rank's device, as messages name it (its GPU's label, where given)
    busbw: Measurement  # GB/s
    wrong_elements: int  # elements of the received sum that differ from the true sum
    elements: int

    @property
    def problem(self) -> str | None:
        if not self.wrong_elements:
            return None
        return (
            f"rank {self.rank} on {self.device}: {self.wrong_elements} of {self.elements} "
            f"elements of the all-reduced sum are wrong"
        )


def allreduce_on_rank(
    dist_env,
    nbytes: int = ALLREDUCE_BYTES,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    labels: dict[str, str] | None = None,
) -> AllReduceResult:
    """Measure on this rank; every rank of the default process group must call it. ``labels``
    name the ranks' devices in messages (``{"cuda:0": "GPU 2 (cuda:0, ...)"}``): the
    controller's GPU labels, since the ranks see the same CUDA numbering."""
    import torch.distributed as dist

    device, rank, world = dist_env.device, dist_env.rank, dist_env.world_size
    elements = nbytes // DTYPE.itemsize
    timing, wrong = _timed_allreduce(dist, device, rank, world, elements, warmup, repeats)
    # The rank processes outlive the test: without this their allocators would keep the
    # buffers (4 S) cached on every GPU, and later tests (usable memory, the pattern test)
    # would find that much less free.
    if device.type == "cuda":
        torch.cuda.empty_cache()
    samples = torch.tensor(timing.samples, dtype=torch.float64, device=device)
    dist.all_reduce(samples)
    averaged = Timing(tuple((samples / world).tolist()), warmup)
    algbw, busbw = allreduce_bandwidths(elements * DTYPE.itemsize, averaged.median, world)
    details = (
        ("size", f"{describe_bytes(elements * DTYPE.itemsize)} per rank"),
        ("dtype", str(DTYPE).removeprefix("torch.")),
        ("world_size", str(world)),
        ("backend", dist_env.backend),
        ("algbw", f"{algbw:.6g} GB/s"),
        ("time", "per repeat averaged over ranks, median of repeats"),
    )
    where = (labels or {}).get(str(device), str(device))
    return AllReduceResult(
        rank, where, Measurement(busbw, "GB/s", averaged, details), wrong, elements
    )


def _timed_allreduce(
    dist, device: torch.device, rank: int, world: int, elements: int, warmup: int, repeats: int
) -> tuple[Timing, int]:
    """This rank's timed repeats, and how many elements of the received sum are wrong."""
    # Small integers (1..7, times rank + 1): non-zero, and their sum over ranks is exact.
    base = torch.arange(elements, dtype=torch.int32, device=device).remainder_(7).add_(1).to(DTYPE)
    source = base * (rank + 1)
    buffer = torch.empty_like(source)
    timing = measure(
        lambda: dist.all_reduce(buffer),
        timer_for(device),
        warmup=warmup,
        repeats=repeats,
        setup=lambda: buffer.copy_(source),
    )
    expected = base * (world * (world + 1) // 2)
    return timing, int((buffer != expected).sum())
