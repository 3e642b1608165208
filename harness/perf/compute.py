"""Matrix-multiply throughput: TFLOP/s = 2*M*N*K / t for square operands.

Operands are normally distributed (seeded, never zero), ``MATMUL_SIZE`` square, written into
a preallocated output so the timed runs allocate nothing. float32 is measured with TF32 off
(``torch.set_float32_matmul_precision("highest")``): the figure is true fp32 throughput,
not TF32 tensor-core throughput.
"""

import contextlib
from collections.abc import Iterator

import torch

from harness.perf.formulas import matmul_flops, tflops
from harness.perf.gpus import Target, place
from harness.perf.measurement import Measurement
from harness.perf.sizes import MATMUL_REPEATS, MATMUL_SIZE, WARMUP
from harness.perf.timing import measure, timer_for

SEED = 1234


@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """float32 matmuls in float32 (TF32 off) inside, the previous setting restored after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def matmul_throughput(
    target: Target,
    dtype: torch.dtype,
    size: int = MATMUL_SIZE,
    *,
    warmup: int = WARMUP,
    repeats: int = MATMUL_REPEATS,
) -> Measurement:
    """TFLOP/s of ``size`` x ``size`` @ ``size`` x ``size`` in ``dtype`` on the device."""
    device, _ = place(target)
    generator = torch.Generator(device=device).manual_seed(SEED)
    a = torch.randn(size, size, dtype=dtype, device=device, generator=generator)
    b = torch.randn(size, size, dtype=dtype, device=device, generator=generator)
    out = torch.empty(size, size, dtype=dtype, device=device)
    with full_fp32_matmul():
        timing = measure(
            lambda: torch.matmul(a, b, out=out),
            timer_for(device),
            warmup=warmup,
            repeats=repeats,
        )
    value = tflops(matmul_flops(size, size, size), timing.median)
    details = (
        ("shape", f"{size}x{size} @ {size}x{size}"),
        ("dtype", str(dtype).removeprefix("torch.")),
    )
    if dtype == torch.float32:
        details += (("tf32", "off"),)
    return Measurement(value, "TFLOP/s", timing, details)
