"""Cross-device agreement: one deterministic computation on every device, compared bit for bit.

The computation (``reference_computation``) is a small MLP block and a reduction: two matmuls,
GELU, softmax and a weighted row sum. Its inputs come from a seeded CPU generator, so every
device starts from the same bits; it runs with ``torch.use_deterministic_algorithms`` and TF32
off. GPUs of one model, driver and library stack must then produce identical bits (cuBLAS
guarantees run-to-run bitwise reproducibility on the same architecture and SM count); a GPU
that does not is computing differently, and ``disagreements`` names it against the majority.
"""

import contextlib
import ctypes
import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from harness.devices import DeviceSet
from harness.gpus import Gpu
from harness.perf.compute import full_fp32_matmul

SEED = 4242
# Rows and features. On a GPU, more output tiles than the GPU has SMs, so every SM computes
# part of the result; on the CPU the same code at a size CI computes in a fraction of a second.
GPU_SIZE = 4096
CPU_SIZE = 256


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic algorithms and full fp32 matmuls inside; previous settings restored.

    torch refuses deterministic CUDA matmuls unless CUBLAS_WORKSPACE_CONFIG fixes cuBLAS's
    workspace, and reads it once, at the process's first cuBLAS call: it must be set before any
    matmul of the process (``harness.environment.prepare_environment``, which the plugin calls
    at configure time).
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with full_fp32_matmul():
            yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@functools.lru_cache(maxsize=2)
def inputs(size: int, seed: int = SEED) -> tuple[torch.Tensor, ...]:
    """x, w1, w2 on the CPU (float32), from a seeded CPU generator: the same bits for every
    device, generated once."""
    generator = torch.Generator().manual_seed(seed)
    x, w1, w2 = (torch.randn(size, size, generator=generator) for _ in range(3))
    return x, w1 / size**0.5, w2 / size**0.5


def reference_computation(
    device: torch.device, dtype: torch.dtype, size: int | None = None
) -> torch.Tensor:
    """The computation's result on ``device``, in ``dtype``, returned on the CPU."""
    if size is None:
        size = GPU_SIZE if device.type == "cuda" else CPU_SIZE
    x, w1, w2 = (t.to(device=device, dtype=dtype) for t in inputs(size))
    with deterministic():
        hidden = torch.nn.functional.gelu(x @ w1)
        y = hidden @ w2
        weighted = (torch.softmax(y, dim=-1) * y).sum(dim=-1, keepdim=True)
        result = torch.cat([y, weighted], dim=1)
    return result.cpu()


@dataclass(frozen=True)
class Agreement:
    """The results of several devices, grouped by identical bits."""

    results: Mapping[str, torch.Tensor]  # by device label
    groups: tuple[tuple[str, ...], ...]  # largest first

    @property
    def agree(self) -> bool:
        return len(self.groups) == 1

    @property
    def majority(self) -> tuple[str, ...] | None:
        """The largest group, when it is strictly larger than every other."""
        if len(self.groups) == 1 or len(self.groups[0]) > len(self.groups[1]):
            return self.groups[0]
        return None

    def digest(self) -> str:
        """SHA-256 of the majority's (or first group's) result bytes: equal across nodes of
        the same GPU model and software stack, so reports can compare nodes too."""
        tensor = self.results[self.groups[0][0]]
        return _sha256(tensor)

    def disagreements(self) -> list[str]:
        """One line per device outside the majority (every device outside the first group
        when there is no majority), with the count of differing elements and the largest
        absolute difference."""
        reference = self.groups[0]
        expected = self.results[reference[0]]
        against = (
            f"the majority ({', '.join(reference)})"
            if self.majority is not None
            else f"{', '.join(reference)} (no majority: which side is wrong is undecided)"
        )
        lines = []
        for group in self.groups[1:]:
            for label in group:
                actual = self.results[label]
                differs = _bits(actual) != _bits(expected)
                gap = (actual.double() - expected.double()).abs().max().item()
                lines.append(
                    f"{label}: {str(actual.dtype).removeprefix('torch.')} result differs from "
                    f"{against}: {int(differs.sum())} of {actual.numel()} elements differ, "
                    f"max abs difference {gap:.3g}"
                )
        return lines


def compare(results: Mapping[str, torch.Tensor]) -> Agreement:
    """Group ``results`` (device label -> tensor, same shape and dtype) by identical bits."""
    if len(results) < 1:
        raise ValueError("nothing to compare")
    groups: list[list[str]] = []
    for label, tensor in results.items():
        for group in groups:
            if torch.equal(_bits(results[group[0]]), _bits(tensor)):
                group.append(label)
                break
        else:
            groups.append([label])
    ordered = sorted(groups, key=len, reverse=True)  # stable: ties keep first-seen order
    return Agreement(dict(results), tuple(tuple(group) for group in ordered))


def run_everywhere(
    devices: Mapping[str, torch.device],
    dtype: torch.dtype,
    compute: Callable[[torch.device, torch.dtype], torch.Tensor] = reference_computation,
) -> Agreement:
    """``compute`` on every device, compared."""
    return compare({label: compute(device, dtype) for label, device in devices.items()})


def devices_to_compare(devices: DeviceSet, gpus: Sequence[Gpu] = ()) -> dict[str, torch.device]:
    """Each of ``gpus`` (the distinct GPUs of CUDA ``devices``) by its label; on CPU, each
    virtual device (all the one CPU)."""
    if devices.kind == "cuda":
        return {gpu.label: gpu.device for gpu in gpus}
    return {f"virtual cpu device {i}": device for i, device in enumerate(devices.devices)}


def _sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes, without NumPy (which torch does not require)."""
    flat = tensor.detach().cpu().contiguous().view(torch.uint8).reshape(-1)
    # A zero-copy view of ``flat``'s memory, used only while ``flat`` is alive.
    view = (ctypes.c_char * flat.numel()).from_address(flat.data_ptr())
    return hashlib.sha256(view).hexdigest()


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers: NaNs and signed zeros compare by their bits too."""
    integer = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return tensor.contiguous().view(integer[tensor.element_size()])
