"""What a training step needs, estimated on the meta device: no memory, no compute, any size.

``estimate_footprint(spec)`` builds the model on the meta device (shapes without values) and
runs a forward and backward pass at two batch sizes under ``LiveBytes``, a dispatch mode that
counts the bytes of every tensor an operation creates until it is freed, after every operation.
Both passes run the same operations, so after the i-th one the bytes held are
``fixed[i] + per_sample[i] * batch``, solved from the two passes; the peak at any batch is the
largest of these. A single line through two peaks would not do: at a small batch the peak is
where the weight gradients are made, at a large one where the activations are held.
Parameters, buffers and Adam's two moments per parameter are held across steps and added to
every point. Gradients are created in the backward pass (the step zeroes them with
``set_to_none``), so the count includes them.

Why this exists: the memory checks need models whose largest batch under a realistic cap is
limited by memory and not by the search's ceiling; this shows which models are, on a CPU.

How it can differ from a GPU (so it is an estimate, and the GPU's search is the answer):

- backends that save less or more than the CPU's kernels: memory-efficient and flash attention
  keep no (tokens x tokens) attention matrix (the CPU's math attention does), cuDNN's RNNs keep
  a reserve space instead of per-step gates;
- the caching allocator rounds blocks up (to 512 B, and to 2 MiB above 1 MiB) and cuBLAS/cuDNN
  workspaces come on top;
- the optimizer step's temporaries (foreach Adam: about one parameter-sized list) are not
  counted: they come after the activations are freed, and stay below the backward peak at any
  batch that fills a card.
"""

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from harness.models import ModelSpec

META = torch.device("meta")


def _storages(obj: Any) -> list[torch.UntypedStorage]:
    """The storages behind every tensor in ``obj`` (a sparse tensor's values and indices)."""
    found = []
    for leaf in tree_leaves(obj):
        if not isinstance(leaf, torch.Tensor):
            continue
        parts = [leaf._values(), leaf._indices()] if leaf.is_sparse else [leaf]
        found.extend(part.untyped_storage() for part in parts)
    return found


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors that operations create on ``device`` while active.

    A tensor counts from the operation that creates its storage until the storage is freed;
    views and in-place results share an input's storage and do not count again, and tensors
    that existed before (parameters) count only where an operation copies them. ``live`` is
    the bytes held now, ``peak`` the most held at once, ``after_each`` the bytes held after
    each operation (frees come between operations, so every local maximum is there).
    """

    def __init__(self, device: torch.device = META) -> None:
        super().__init__()
        self.device = device
        self.live = 0
        self.peak = 0
        self.after_each: list[int] = []
        self._held: dict[int, int] = {}  # storage address -> bytes, for the storages counted

    def _freed(self, key: int) -> None:
        self.live -= self._held.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {storage._cdata for storage in _storages((args, kwargs))}
        for storage in _storages(out):
            key = storage._cdata
            if key in inputs or key in self._held or storage.device != self.device:
                continue
            self._held[key] = storage.nbytes()
            self.live += self._held[key]
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key)
        self.after_each.append(self.live)
        return out


@dataclass(frozen=True)
class Footprint:
    """A training step's bytes held after each operation, as ``fixed[i] + per_sample[i] *
    batch``; its peak at a batch is the largest of them."""

    fixed: tuple[int, ...]
    per_sample: tuple[int, ...]

    @classmethod
    def from_runs(cls, held: int, small: tuple[int, list[int]], large: tuple[int, list[int]]):
        """From the bytes after each operation at two batch sizes ``(batch, after_each)``,
        plus ``held`` bytes at every point."""
        (b1, run1), (b2, run2) = small, large
        if len(run1) != len(run2) or not 0 < b1 < b2:
            raise ValueError(
                f"the passes at batch {b1} and {b2} ran {len(run1)} and {len(run2)} operations; "
                "the estimate needs the same operations at every batch size"
            )
        slopes = tuple((y2 - y1) // (b2 - b1) for y1, y2 in zip(run1, run2))
        return cls(tuple(y1 - a * b1 + held for y1, a in zip(run1, slopes)), slopes)

    def at(self, batch: int) -> int:
        """The estimated peak bytes at ``batch``."""
        return max(c + a * batch for c, a in zip(self.fixed, self.per_sample))

    def largest_batch(self, cap: int) -> int:
        """The largest batch whose estimated peak is within ``cap`` (0: not even one)."""
        if self.at(1) > cap:
            return 0
        return min((cap - c) // a for c, a in zip(self.fixed, self.per_sample) if a > 0)

    @property
    def per_sample_at_peak(self) -> int:
        """Bytes per sample where a large batch peaks (the largest slope)."""
        return max(self.per_sample)


def step_bytes(
    spec: ModelSpec, model: torch.nn.Module, batch: int, dtype: torch.dtype
) -> list[int]:
    """The bytes held after each operation of a forward and backward pass at ``batch`` on the
    meta device, counting its inputs and gradients but not the model's parameters."""
    model.zero_grad(set_to_none=True)
    with LiveBytes(META) as counter:
        args, kwargs = spec.make_inputs(batch, dtype, META)
        spec.loss(model(*args, **kwargs)).backward()
        del args, kwargs
    model.zero_grad(set_to_none=True)
    return counter.after_each


def held_across_steps(model: torch.nn.Module) -> int:
    """Parameters, buffers, and Adam's (or SparseAdam's) two moments per trainable parameter."""
    tensors = [*model.parameters(), *model.buffers()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    return nbytes + 2 * sum(p.numel() * p.element_size() for p in trainable)


def estimate_footprint(
    spec: ModelSpec, dtype: torch.dtype = torch.float32, batches: tuple[int, int] = (2, 3)
) -> Footprint:
    """``spec``'s training step (forward, backward, Adam) on the meta device at two batch
    sizes, as the bytes held after each operation at any batch size."""
    model = spec.make(dtype, META).train()
    runs = [(batch, step_bytes(spec, model, batch, dtype)) for batch in batches]
    return Footprint.from_runs(held_across_steps(model), *runs)
