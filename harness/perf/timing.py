"""Timing one operation: warm-up runs, then the median of timed repeats.

A ``Timer`` runs a function once and returns how long it took in seconds. On a GPU that is
``cuda_timer``: CUDA events recorded on the current stream before and after, so the figure is
the device's time for the work the function queued, not the host's time to queue it. On the
CPU it is ``wall_timer`` over ``time.perf_counter`` (a clock can be injected for tests).
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

Timer = Callable[[Callable[[], object]], float]


@dataclass(frozen=True)
class Timing:
    """The timed repeats of one operation, in seconds, warm-up runs excluded."""

    samples: tuple[float, ...]
    warmup: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def repeats(self) -> int:
        return len(self.samples)


def measure(
    operation: Callable[[], object],
    timer: Timer,
    *,
    warmup: int,
    repeats: int,
    setup: Callable[[], object] | None = None,
) -> Timing:
    """Run ``operation`` ``warmup`` times untimed, then time it ``repeats`` times.

    ``setup`` runs, untimed, before every run (warm-up runs included): for operations that
    consume their input, such as an in-place all-reduce.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        if setup is not None:
            setup()
        operation()
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        samples.append(timer(operation))
    return Timing(tuple(samples), warmup)


def wall_timer(clock: Callable[[], float] = time.perf_counter) -> Timer:
    """A host-clock timer, for CPU tensors (whose operations finish before they return)."""

    def run(operation: Callable[[], object]) -> float:
        start = clock()
        operation()
        return clock() - start

    return run


def cuda_timer(device: torch.device) -> Timer:
    """A CUDA-event timer on ``device``'s current stream.

    The events bracket the work ``operation`` queues on that stream (or makes it wait for:
    a peer copy and an NCCL collective make the current stream wait on theirs); the host
    waits for the end event before reading the elapsed time.
    """

    def run(operation: Callable[[], object]) -> float:
        with torch.cuda.device(device):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            operation()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds

    return run


def timer_for(device: torch.device) -> Timer:
    """CUDA events for a GPU, the wall clock for the CPU."""
    return cuda_timer(device) if device.type == "cuda" else wall_timer()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
