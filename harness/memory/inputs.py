"""A training step's inputs at any batch size, built on the device from a small seed batch.

``ModelSpec.make_inputs`` draws its random normals with a CPU generator (so the data-parallel
suites can compare runs row by row) and then copies them to the device: at the batches of the
largest-batch search that is gigabytes drawn on the CPU per trial, while the GPU's step takes
milliseconds. The memory checks need the inputs' bytes, not their values, so ``TiledInputs``
draws a seed batch of ``SEED_BATCH`` rows once on the CPU and, for each batch, allocates each
input tensor at its full size on the device and fills it with copies of the seed's rows: the
seed's rows cross PCIe into the first rows, then the filled part is copied onto the rest on
the device, doubling each time.

The tensors are the ones ``make_inputs`` would give in all but values: the same structure,
shapes, dtypes and ``requires_grad``, contiguous, each in its own freshly allocated storage of
the same byte count (never a broadcast view, which would hold only the seed's bytes), and
nothing else is allocated on the device while they are built (with the batch in a dimension
other than the first, the seed's rows reach the device through a seed-sized buffer, as a copy
from the host into a strided view does). Integer token ids are seed
values, so they stay valid. Rows repeat with a period of ``SEED_BATCH``.

Where the batch dimension is comes from ``make_inputs`` itself, at batch 1 and ``SEED_BATCH``:
each tensor must differ in exactly one dimension, 1 against ``SEED_BATCH`` (dimension 0 for
every model of ``harness.models``, but a sequence-first input works too). Inputs where that
does not hold (a tensor without a batch dimension, a flattened batch, a non-tensor value that
changes with the batch, a sparse or overlapping tensor, two inputs sharing storage) are built
by ``make_inputs`` at every batch, as before: slow, never wrong.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from harness.models import ModelSpec

SEED_BATCH = 8

Inputs = tuple[tuple, dict]


@dataclass(frozen=True)
class _Tile:
    """One input tensor: its seed rows on the CPU and the dimension they are stacked along."""

    seed: torch.Tensor
    dim: int
    requires_grad: bool

    def build(self, batch: int, device: torch.device) -> torch.Tensor:
        shape = list(self.seed.shape)
        shape[self.dim] = batch
        out = torch.empty(shape, dtype=self.seed.dtype, device=device)
        filled = min(batch, self.seed.shape[self.dim])
        out.narrow(self.dim, 0, filled).copy_(self.seed.narrow(self.dim, 0, filled))
        while filled < batch:
            more = min(filled, batch - filled)
            out.narrow(self.dim, filled, more).copy_(out.narrow(self.dim, 0, more))
            filled += more
        return out.requires_grad_(self.requires_grad)


class _Untileable(Exception):
    """Why a model's inputs are left to ``make_inputs``."""


class TiledInputs:
    """``inputs(batch) -> (args, kwargs)``: ``spec``'s inputs at ``batch`` on ``device``, tiled
    from a seed batch; ``reason`` says why they come from ``make_inputs`` instead (None when
    tiled)."""

    def __init__(self, spec: ModelSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.spec = spec
        self.dtype = dtype
        self.device = torch.device(device)
        cpu = torch.device("cpu")
        self.reason: str | None = None
        self._leaves: list | None = None
        seed, self._structure = tree_flatten(spec.make_inputs(SEED_BATCH, dtype, cpu))
        one, structure_at_one = tree_flatten(spec.make_inputs(1, dtype, cpu))
        try:
            if structure_at_one != self._structure:
                raise _Untileable("the inputs' structure changes with the batch")
            self._leaves = [_tile(a, b) for a, b in zip(one, seed)]
            _check_storages(seed)
        except _Untileable as err:
            self.reason, self._leaves = str(err), None

    def __call__(self, batch: int) -> Inputs:
        if self._leaves is None:
            return self.spec.make_inputs(batch, self.dtype, self.device)
        built = [
            leaf.build(batch, self.device) if isinstance(leaf, _Tile) else leaf
            for leaf in self._leaves
        ]
        return tree_unflatten(built, self._structure)


def _tile(one: Any, seed: Any) -> Any:
    """``seed``'s ``_Tile``, given the same input at batch 1; a non-tensor as it is."""
    if not isinstance(seed, torch.Tensor):
        if isinstance(one, torch.Tensor) or one != seed:
            raise _Untileable(f"the input {seed!r} changes with the batch")
        return seed
    if seed.layout != torch.strided or not seed.is_contiguous():
        raise _Untileable(f"an input tensor is {seed.layout}, contiguous: {seed.is_contiguous()}")
    differ = [d for d, (a, b) in enumerate(zip(one.shape, seed.shape)) if a != b]
    if (
        one.dim() != seed.dim()
        or len(differ) != 1
        or (one.shape[differ[0]], seed.shape[differ[0]]) != (1, SEED_BATCH)
    ):
        raise _Untileable(
            f"an input of shape {tuple(one.shape)} at batch 1 is {tuple(seed.shape)} at batch "
            f"{SEED_BATCH}: no single batch dimension"
        )
    return _Tile(seed.detach(), differ[0], seed.requires_grad)


def _check_storages(seed: list) -> None:
    """Tiles are allocated one by one: inputs sharing a storage would be counted twice."""
    storages = [t.untyped_storage().data_ptr() for t in seed if isinstance(t, torch.Tensor)]
    if len(set(storages)) != len(storages):
        raise _Untileable("two input tensors share storage")
