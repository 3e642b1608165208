"""Claims: torch.distributed's collectives give the right values on this backend.

Every rank contributes values only it holds (rank-dependent, signed, never zero) and
computes the expected result on its own from the same recipe evaluated for every rank
(``harness.ddp_checks.collectives``). Checked in float32, float64, int64 and
bfloat16, over lengths no world size divides (1, 13, and a large prime that makes the
backend chunk its work), and over uneven splits for the collectives with list or
split-size forms. Each test holds for any world size of two or more. What a backend does
not implement (gloo with CUDA tensors, gloo's all_to_all of unequal tensors, AVG of
integers) is skipped with the reason.
"""

import pytest
import torch
import torch.distributed as dist

from harness.ddp_checks.collectives import (
    LARGE_PRIME,
    all_gather_single,
    contribution,
    exchange_values,
    expected_reduction,
    rank_values,
    reduce_op,
    reduce_scatter_single,
    reduce_scatter_size,
    split_size,
    unsupported,
)
from harness.tolerances import assert_close

DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64"),
    pytest.param(torch.int64, id="int64"),
    pytest.param(torch.bfloat16, id="bfloat16"),
]
LENGTHS = [
    pytest.param(1, id="length=1"),
    pytest.param(13, id="length=13"),
    pytest.param(LARGE_PRIME, id=f"length={LARGE_PRIME}"),
]
REDUCE_OPS = ["SUM", "PRODUCT", "MAX", "MIN", "AVG"]

distributed = pytest.mark.distributed(world_size=2)


def _skip_unless_supported(dist_env, collective: str, dtype: torch.dtype, op: str = "") -> None:
    reason = unsupported(collective, dist_env.backend, dist_env.device, dtype, op)
    if reason:
        pytest.skip(f"{dist_env.backend}: {reason}")


def _check(actual: torch.Tensor, expected: torch.Tensor, dist_env, what: str) -> None:
    assert actual.dtype == expected.dtype, (
        f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    )
    assert_close(
        actual.cpu(),
        expected,
        device_kind=dist_env.device.type,
        what=f"rank {dist_env.rank} of {dist_env.world_size}: {what}",
    )


@distributed
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_all_reduce_combines_every_ranks_values(dist_env, op, dtype, length):
    _skip_unless_supported(dist_env, "all_reduce", dtype, op)
    rank, world = dist_env.rank, dist_env.world_size
    tensor = contribution(op, rank, length, dtype, dist_env.world_size).to(dist_env.device)
    dist.all_reduce(tensor, op=reduce_op(op))
    _check(tensor, expected_reduction(op, world, length, dtype), dist_env, f"all_reduce {op}")


@distributed
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast_from_every_rank_delivers_that_ranks_values(dist_env, dtype, length):
    _skip_unless_supported(dist_env, "broadcast", dtype)
    for src in range(dist_env.world_size):
        tensor = rank_values(dist_env.rank, length, dtype).to(dist_env.device)
        dist.broadcast(tensor, src=src)
        _check(tensor, rank_values(src, length, dtype), dist_env, f"broadcast from rank {src}")


@distributed
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_gather_delivers_every_ranks_values_in_rank_order(dist_env, dtype, length):
    _skip_unless_supported(dist_env, "all_gather", dtype)
    world, device = dist_env.world_size, dist_env.device
    outputs = [torch.zeros(length, dtype=dtype, device=device) for _ in range(world)]
    dist.all_gather(outputs, rank_values(dist_env.rank, length, dtype).to(device))
    for src, output in enumerate(outputs):
        _check(output, rank_values(src, length, dtype), dist_env, f"all_gather entry {src}")


@distributed
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_gather_into_one_tensor_concatenates_in_rank_order(dist_env, dtype, length):
    _skip_unless_supported(dist_env, "all_gather_single", dtype)
    world, device = dist_env.world_size, dist_env.device
    output = torch.zeros(world * length, dtype=dtype, device=device)
    all_gather_single(output, rank_values(dist_env.rank, length, dtype).to(device))
    expected = torch.cat([rank_values(src, length, dtype) for src in range(world)])
    _check(output, expected, dist_env, "all_gather_single")


@distributed
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["SUM", "MAX"])
def test_reduce_scatter_tensor_gives_each_rank_its_reduced_chunk(dist_env, op, dtype, length):
    """The input is world_size chunks of ``length``; rank r receives chunk r reduced."""
    _skip_unless_supported(dist_env, "reduce_scatter_single", dtype, op)
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device
    total = world * length
    output = torch.zeros(length, dtype=dtype, device=device)
    reduce_scatter_single(
        output, contribution(op, rank, total, dtype, world).to(device), reduce_op(op)
    )
    expected = expected_reduction(op, world, total, dtype)[rank * length : (rank + 1) * length]
    _check(output, expected, dist_env, f"reduce_scatter_single {op}")


@distributed
@pytest.mark.parametrize("dtype", DTYPES)
def test_reduce_scatter_list_with_uneven_chunks_gives_each_rank_its_sum(dist_env, dtype):
    """Rank j receives ``reduce_scatter_size(j)`` elements (1, 2, 3, 1, ...)."""
    _skip_unless_supported(dist_env, "reduce_scatter", dtype, "SUM")
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device
    sizes = [reduce_scatter_size(j) for j in range(world)]
    offsets = [sum(sizes[:j]) for j in range(world)]
    mine = contribution("SUM", rank, sum(sizes), dtype, world)
    inputs = [mine[offsets[j] : offsets[j] + sizes[j]].to(device) for j in range(world)]
    output = torch.zeros(sizes[rank], dtype=dtype, device=device)
    dist.reduce_scatter(output, inputs, op=dist.ReduceOp.SUM)
    total = expected_reduction("SUM", world, sum(sizes), dtype)
    expected = total[offsets[rank] : offsets[rank] + sizes[rank]]
    _check(output, expected, dist_env, f"reduce_scatter chunk of {sizes[rank]}")


@distributed
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("splits", ["even", "uneven"])
def test_all_to_all_single_delivers_each_pairs_slice(dist_env, splits, dtype):
    """Rank s sends rank d ``split_size(s, d)`` elements (uneven) or 13 (even)."""
    _skip_unless_supported(dist_env, "all_to_all_single", dtype)
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device

    def size(src: int, dst: int) -> int:
        return split_size(src, dst) if splits == "uneven" else 13

    send = torch.cat([exchange_values(rank, d, dtype, size) for d in range(world)]).to(device)
    in_splits = [size(rank, d) for d in range(world)]
    out_splits = [size(s, rank) for s in range(world)]
    output = torch.zeros(sum(out_splits), dtype=dtype, device=device)
    dist.all_to_all_single(output, send, output_split_sizes=out_splits, input_split_sizes=in_splits)
    expected = torch.cat([exchange_values(s, rank, dtype, size) for s in range(world)])
    _check(output, expected, dist_env, f"all_to_all_single, {splits} splits {out_splits}")


@distributed
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("splits", ["even", "uneven"])
def test_all_to_all_list_delivers_each_pairs_tensor(dist_env, splits, dtype):
    _skip_unless_supported(
        dist_env, "all_to_all_uneven" if splits == "uneven" else "all_to_all", dtype
    )
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device

    def size(src: int, dst: int) -> int:
        return split_size(src, dst) if splits == "uneven" else 13

    inputs = [exchange_values(rank, d, dtype, size).to(device) for d in range(world)]
    outputs = [torch.zeros(size(s, rank), dtype=dtype, device=device) for s in range(world)]
    dist.all_to_all(outputs, inputs)
    for src, output in enumerate(outputs):
        _check(output, exchange_values(src, rank, dtype, size), dist_env, f"all_to_all from {src}")
