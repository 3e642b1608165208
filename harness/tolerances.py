"""How close a data-parallel result must be to the single-device one.

Bitwise equality is not a property of data parallelism, even in float64 on
the CPU: a chunk's matmul may run another BLAS kernel than the full batch's,
and replica gradients are summed in another order. Measured on CPU with the
reference implementation (MLP, batches 7 to 1024, four virtual devices), the
largest deviation was 2e-16 absolute in outputs and 1e-12 relative in
gradients for float64, 7e-8 absolute for float32. The tolerances below sit
a few orders above those and many orders below any semantic fault (a lost
chunk, a gradient scaled by the device count, a stale replica).
"""

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def __str__(self) -> str:
        return f"rtol={self.rtol:g}, atol={self.atol:g}"


EXACT = Tolerance(0.0, 0.0)

# Keyed by (dtype, device kind). CUDA float32 allows for TF32 convolutions,
# which cuDNN uses by default.
TOLERANCES: dict[tuple[torch.dtype, str], Tolerance] = {
    (torch.float64, "cpu"): Tolerance(1e-10, 1e-12),
    (torch.float32, "cpu"): Tolerance(1e-4, 1e-5),
    (torch.bfloat16, "cpu"): Tolerance(1.6e-2, 1e-2),
    (torch.float16, "cpu"): Tolerance(1e-3, 1e-3),
    (torch.float64, "cuda"): Tolerance(1e-10, 1e-12),
    (torch.float32, "cuda"): Tolerance(1e-3, 1e-4),
    (torch.bfloat16, "cuda"): Tolerance(1.6e-2, 1e-2),
    (torch.float16, "cuda"): Tolerance(1e-3, 1e-3),
}


def tolerance_for(dtype: torch.dtype, device_kind: str) -> Tolerance:
    """Integer and bool results must match exactly."""
    if not dtype.is_floating_point:
        return EXACT
    try:
        return TOLERANCES[(dtype, device_kind)]
    except KeyError:
        raise KeyError(f"no tolerance for {dtype} on {device_kind} devices") from None


def assert_close(actual: Any, expected: Any, *, device_kind: str, what: str) -> None:
    """Compare (nested) results leaf by leaf, each with its dtype's tolerance.

    ``what`` names the compared quantity in the failure message, e.g.
    "gradient of layer.0.weight"; nested leaves add their path to it.
    """
    if type(actual) is not type(expected):
        raise AssertionError(
            f"{what}: got {type(actual).__name__}, single device gave {type(expected).__name__}"
        )
    if isinstance(expected, torch.Tensor):
        _assert_tensor_close(actual, expected, device_kind=device_kind, what=what)
    elif isinstance(expected, dict):
        if list(actual) != list(expected):
            raise AssertionError(f"{what}: keys {list(actual)} != {list(expected)}")
        for key in expected:
            assert_close(
                actual[key], expected[key], device_kind=device_kind, what=f"{what}[{key!r}]"
            )
    elif isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            raise AssertionError(f"{what}: {len(actual)} items, single device gave {len(expected)}")
        names = getattr(expected, "_fields", range(len(expected)))
        for name, a, e in zip(names, actual, expected, strict=True):
            label = f"{what}.{name}" if isinstance(name, str) else f"{what}[{name}]"
            assert_close(a, e, device_kind=device_kind, what=label)
    elif actual != expected:
        raise AssertionError(f"{what}: {actual!r} != {expected!r}")


def difference(got: torch.Tensor, ref: torch.Tensor) -> str:
    """How two tensors meant to be bitwise equal differ, in a few words."""
    if got.shape != ref.shape:
        return f"shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    got, ref = _dense(got), _dense(ref)
    if not (got.dtype.is_floating_point or got.dtype.is_complex):
        mismatched = (got != ref).sum().item()
        return f"{mismatched} of {ref.numel()} elements differ"
    diff = (got.double() - ref.double()).abs().max().item()
    return f"largest absolute difference {diff:.3g}"


def _assert_tensor_close(
    actual: torch.Tensor, expected: torch.Tensor, *, device_kind: str, what: str
) -> None:
    tol = tolerance_for(expected.dtype, device_kind)
    torch.testing.assert_close(
        _dense(actual),
        _dense(expected),
        rtol=tol.rtol,
        atol=tol.atol,
        check_device=False,
        msg=lambda detail: f"{what} differs from the single-device result ({tol}):\n{detail}",
    )


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    return (tensor.to_dense() if tensor.is_sparse else tensor).cpu()
