"""Rank-dependent data for collective tests, and the results they must give.

Every rank contributes values no other rank holds (``rank_values``): signed, never zero,
distinct in every rank and element, small integers so that float sums are exact (for
bfloat16 sums over wider worlds, smaller ones: ``compact_values``; for products, signed
powers of two: ``product_values``). Every
rank computes the expected result of a collective on its own, from the same recipe
evaluated for every rank, in float64 (or int64) and cast to the dtype under test; the
comparison uses ``harness.tolerances`` (exact for integers, bfloat16's tolerance for its
rounding).

Sizes: lengths that no world size above one divides (1, 13 and a prime large enough for
chunked algorithms), and uneven splits (``split_size``) for the collectives whose list or
split-size forms allow them.
"""

import torch
import torch.distributed as dist

# A length that is prime and large enough to make gloo and NCCL split the work into
# several chunks and pipeline steps.
LARGE_PRIME = 65537

# ReduceOp name -> how to combine per-rank values in float64/int64.
REDUCTIONS = {
    "SUM": lambda stacked: stacked.sum(0),
    "PRODUCT": lambda stacked: stacked.prod(0),
    "MAX": lambda stacked: stacked.amax(0),
    "MIN": lambda stacked: stacked.amin(0),
    "AVG": lambda stacked: stacked.mean(0),
}


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype.is_floating_point else torch.int64


def rank_values(rank: int, length: int, dtype: torch.dtype, salt: int = 0) -> torch.Tensor:
    """``length`` values that only ``rank`` holds (on the CPU), for sums, maxima, minima.

    Element ``i`` is ``±(1 + (7 i + 3 salt) mod 13 + 16 rank)``, negative for odd
    ``i + salt``: never zero, different on every rank, and the sign alternates so that the
    maximum and the minimum come from different ranks. ``salt`` tells apart several
    tensors one rank sends (one per destination, say).
    """
    i = torch.arange(length, dtype=torch.int64)
    magnitude = (7 * i + 3 * salt) % 13 + 1 + 16 * rank
    sign = 1 - 2 * ((i + salt) % 2)
    return (sign * magnitude).to(dtype)


def product_values(rank: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """Values in {±1, ±2} that differ between neighbouring ranks, for products.

    A 2 where ``(i + rank) % 4 == 0``, a negative sign where ``(i + 2 rank) % 5 == 0``:
    every product over the ranks is a signed power of two, exact in every float dtype
    (bfloat16 included) for any world size up to hundreds of ranks, whatever order the
    backend multiplies in.
    """
    i = torch.arange(length, dtype=torch.int64)
    value = torch.where((i + rank) % 4 == 0, 2, 1)
    sign = torch.where((i + 2 * rank) % 5 == 0, -1, 1)
    return (sign * value).to(dtype)


def compact_values(rank: int, length: int, dtype: torch.dtype, bound: int) -> torch.Tensor:
    """Like ``rank_values`` but with magnitudes ``1 .. bound``, shifted by the rank.

    For sums in a dtype with few mantissa bits: ``bound * world_size`` at most the largest
    integer up to which the dtype counts exactly keeps every partial sum exact, in any
    order. Neighbouring ranks hold different values wherever ``bound >= 2``.
    """
    i = torch.arange(length, dtype=torch.int64)
    magnitude = (7 * i + rank) % max(bound, 1) + 1
    sign = 1 - 2 * (i % 2)
    return (sign * magnitude).to(dtype)


# Integers up to these are exact in the dtype (2 ** (mantissa bits + 1)).
_EXACT_INTEGERS = {torch.bfloat16: 2**8, torch.float16: 2**11}


def contribution(
    op: str, rank: int, length: int, dtype: torch.dtype, world_size: int
) -> torch.Tensor:
    """What ``rank`` contributes to a reduction ``op`` in a world of ``world_size``.

    ``product_values`` for PRODUCT; for sums in a narrow dtype (bfloat16) over a world
    where ``rank_values`` would need rounding, ``compact_values`` small enough that every
    partial sum is exact; ``rank_values`` otherwise.
    """
    if op == "PRODUCT":
        return product_values(rank, length, dtype)
    limit = _EXACT_INTEGERS.get(dtype)
    largest = 16 * (world_size - 1) + 13  # rank_values' largest magnitude
    if op in ("SUM", "AVG") and limit is not None and world_size * largest > limit:
        return compact_values(rank, length, dtype, limit // world_size)
    return rank_values(rank, length, dtype)


def expected_reduction(op: str, world_size: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The reduction of every rank's ``contribution``, computed without communication."""
    # Each rank's values as the dtype holds them, then combined exactly in float64/int64.
    stacked = torch.stack(
        [contribution(op, r, length, dtype, world_size).to(_wide(dtype)) for r in range(world_size)]
    )
    return REDUCTIONS[op](stacked).to(dtype)


def split_size(src: int, dst: int) -> int:
    """Elements ``src`` sends ``dst`` in an uneven exchange: 1 to 3, never all equal."""
    return 1 + (src + 2 * dst) % 3


def reduce_scatter_size(rank: int) -> int:
    """Elements rank ``rank`` receives in an uneven reduce-scatter: 1, 2, 3, 1, ..."""
    return 1 + rank % 3


def exchange_values(src: int, dst: int, dtype: torch.dtype, sizes=split_size) -> torch.Tensor:
    """What ``src`` sends ``dst`` in an all-to-all: ``sizes(src, dst)`` values of ``src``'s."""
    return rank_values(src, sizes(src, dst), dtype, salt=dst)


def reduce_op(name: str) -> dist.ReduceOp:
    return getattr(dist.ReduceOp, name)


# ------------------------------------------------------------------------ support


# gloo with CUDA tensors (ranks sharing a GPU): torch.distributed's backend table lists
# all_reduce and broadcast; ProcessGroupGloo also has CUDA paths (staging through pinned
# host memory) for all_gather and all_to_all_single. The rest are checked on CPU tensors
# and NCCL only, not guessed at.
_GLOO_CUDA = {"all_reduce", "broadcast", "all_gather", "all_to_all_single"}


def unsupported(
    collective: str, backend: str, device: torch.device, dtype: torch.dtype, op: str = ""
) -> str | None:
    """Why ``collective`` (with reduction ``op``) cannot run here, or None if it can.

    Measured with gloo on the CPU (torch 2.13): every op and dtype of this module except
    those below. NCCL supports them all (its list-form reduce_scatter takes uneven chunks
    through coalesced reduces, its all_to_all tensors of any sizes).
    """
    if op == "AVG" and not dtype.is_floating_point:
        return "ReduceOp.AVG of integers has no integer result (torch raises on the cast)"
    if backend == "gloo" and device.type == "cuda" and collective not in _GLOO_CUDA:
        return f"{collective} is checked on CPU tensors with gloo (CUDA tensors: NCCL)"
    if backend == "gloo" and collective == "all_to_all_uneven":
        return "gloo's all_to_all needs equal-size tensors (use all_to_all_single for splits)"
    return None


def all_gather_single(output: torch.Tensor, tensor: torch.Tensor) -> None:
    """``all_gather_single`` where torch has it (2.13), else ``all_gather_into_tensor``."""
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(output, tensor)


def reduce_scatter_single(output: torch.Tensor, tensor: torch.Tensor, op: dist.ReduceOp) -> None:
    """``reduce_scatter_single`` where torch has it (2.13), else ``reduce_scatter_tensor``."""
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    fn(output, tensor, op=op)
