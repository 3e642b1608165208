"""Copy bandwidth: within a GPU, between pinned host memory and a GPU, and between two GPUs.

Each measurement copies a source buffer holding the ``pattern`` over a destination holding a
different one, ``WARMUP`` times untimed and ``REPEATS`` times timed (device events on the
stream the copy runs on), and reports the median. Afterwards the destination must hold
exactly the pattern sent, regenerated on the receiving side: a copy that corrupts or drops
bytes (or does nothing) is reported in ``corruption``, naming the copy.

Bytes counted: a device-to-device copy of S bytes counts 2S (S read and S written in the same
memory, as the references in the profiles count it); a host or peer copy counts S, in one
direction.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.perf.formulas import bandwidth_gbs
from harness.perf.gpus import Target, place
from harness.perf.measurement import Measurement
from harness.perf.pattern import find_mismatch, pattern
from harness.perf.sizes import COPY_BYTES, HOST_COPY_BYTES, REPEATS, WARMUP, describe_bytes
from harness.perf.timing import measure, timer_for

# (destination, source): copy the source's bytes into the destination.
Copy = Callable[[torch.Tensor, torch.Tensor], object]

SEED = 20240917
# What a destination holds before the copy: differs from the pattern sent in every word (an
# even offset survives the pattern's odd-making last step), so a copy that does nothing fails.
STALE_SEED = SEED + 2
HOST = torch.device("cpu")


def tensor_copy(destination: torch.Tensor, source: torch.Tensor) -> None:
    # non_blocking: a pinned host buffer is copied asynchronously on the stream the events
    # bracket, rather than through a host-synchronising staging copy.
    destination.copy_(source, non_blocking=True)


@dataclass(frozen=True)
class CopyResult:
    bandwidth: Measurement  # GB/s
    corruption: str | None  # one line naming the copy and what differs; None if intact


def device_copy(
    target: Target,
    nbytes: int = COPY_BYTES,
    *,
    copy: Copy = tensor_copy,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> CopyResult:
    """Copy within the device's memory; read and written bytes counted (2 x ``nbytes``)."""
    device, label = place(target)
    return _copy(
        f"copy within {label}",
        source=pattern(nbytes, SEED, device),
        destination=pattern(nbytes, STALE_SEED, device),
        timed_on=device,
        counted=2 * nbytes,
        details=(("size", describe_bytes(nbytes)), ("counted", "read + write")),
        copy=copy,
        warmup=warmup,
        repeats=repeats,
    )


def host_to_device(
    target: Target,
    nbytes: int = HOST_COPY_BYTES,
    *,
    copy: Copy = tensor_copy,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> CopyResult:
    """Pinned host memory to the device (pinned only for a GPU; the CPU has nothing to pin)."""
    return _host_link(target, nbytes, to_device=True, copy=copy, warmup=warmup, repeats=repeats)


def device_to_host(
    target: Target,
    nbytes: int = HOST_COPY_BYTES,
    *,
    copy: Copy = tensor_copy,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> CopyResult:
    """The device to pinned host memory."""
    return _host_link(target, nbytes, to_device=False, copy=copy, warmup=warmup, repeats=repeats)


def _host_link(
    target: Target, nbytes: int, *, to_device: bool, copy: Copy, warmup: int, repeats: int
) -> CopyResult:
    device, label = place(target)
    pin = device.type == "cuda"
    host = pattern(nbytes, SEED if to_device else STALE_SEED, HOST, pin=pin)
    gpu = pattern(nbytes, STALE_SEED if to_device else SEED, device)
    source, destination = (host, gpu) if to_device else (gpu, host)
    ends = ("pinned host", label)
    return _copy(
        " -> ".join(ends if to_device else reversed(ends)),
        source=source,
        destination=destination,
        timed_on=device,
        counted=nbytes,
        details=(
            ("size", describe_bytes(nbytes)),
            ("host_memory", "pinned" if pin else "pageable (CPU device)"),
        ),
        copy=copy,
        warmup=warmup,
        repeats=repeats,
    )


def peer_copy(
    source: Target,
    destination: Target,
    nbytes: int = COPY_BYTES,
    *,
    copy: Copy = tensor_copy,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> CopyResult:
    """``source`` to ``destination``, one direction, ``nbytes`` counted.

    torch runs a cross-device copy on the source device's current stream (after a two-way
    barrier with the destination's), so the events are recorded there. Without peer access
    the driver stages the copy through host memory, and the figure shows it.
    """
    (src, src_label), (dst, dst_label) = place(source), place(destination)
    return _copy(
        f"{src_label} -> {dst_label}",
        source=pattern(nbytes, SEED, src),
        destination=pattern(nbytes, STALE_SEED, dst),
        timed_on=src,
        counted=nbytes,
        details=(
            ("size", describe_bytes(nbytes)),
            ("direction", f"{src} -> {dst}"),
            ("peer_access", _peer_access(src, dst)),
        ),
        copy=copy,
        warmup=warmup,
        repeats=repeats,
    )


def _copy(
    what: str,
    *,
    source: torch.Tensor,
    destination: torch.Tensor,
    timed_on: torch.device,
    counted: int,
    details: tuple[tuple[str, str], ...],
    copy: Copy,
    warmup: int,
    repeats: int,
) -> CopyResult:
    timing = measure(
        lambda: copy(destination, source), timer_for(timed_on), warmup=warmup, repeats=repeats
    )
    # The timer waited for the last copy's end event, so the destination is complete.
    mismatch = find_mismatch(destination, SEED)
    corruption = None if mismatch is None else f"{what}: {mismatch.describe()}"
    value = bandwidth_gbs(counted, timing.median)
    return CopyResult(Measurement(value, "GB/s", timing, details), corruption)


def _peer_access(source: torch.device, destination: torch.device) -> str:
    if source.type != "cuda" or destination.type != "cuda":
        return "n/a"
    access = torch.cuda.can_device_access_peer(source, destination)
    return "yes" if access else "no (staged through host memory)"
