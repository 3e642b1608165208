"""Claims at a world of four ranks, where two ranks could hide a fault.

With two ranks, "the other rank" is always rank 1, an average is a pairwise mean, and an
uneven split has only two sizes. These repeat a few claims of the other files on four
ranks: rank 0's state reaches every rank, averaged gradients equal the full batch's, and
uneven collectives deliver each pair's data. Every test here holds for any world size
of two or more too (under torchrun they run on the real world).

This file sorts after the two-rank files on purpose: the rank pool is rebuilt when the
world size changes, so a serial run pays for the four-rank pool once.
"""

import pytest
import torch
import torch.distributed as dist

from harness.ddp_checks.collectives import (
    contribution,
    exchange_values,
    expected_reduction,
    reduce_op,
    split_size,
    unsupported,
)
from harness.ddp_checks.data import global_batch, shard_loss, shard_rows, shards_unlike_the_batch
from harness.ddp_checks.modules import randomise_state
from harness.ddp_checks.ranks import (
    assert_every_rank_holds_rank0s,
    assert_ranks_differ,
    gather_all,
    module_state,
)
from harness.ddp_checks.training import (
    SGD_MOMENTUM,
    assert_gradients_match,
    assert_parameters_match,
)
from harness.model_specs import model_spec
from harness.models import ZOO
from harness.tolerances import assert_close
from harness.training import comparable, run_steps

STEPS = 2

four_ranks = pytest.mark.distributed(world_size=4)


@four_ranks
def test_every_rank_gets_rank0s_state_when_wrapping(dist_env):
    model = ZOO["cnn_bn"].make(torch.float64, dist_env.device, seed=100 + dist_env.rank)
    randomise_state(model, seed=200 + dist_env.rank)
    before = gather_all(module_state(model))
    assert_ranks_differ(before, what="ranks built their models from different seeds")
    dist_env.ddp(model)
    assert_every_rank_holds_rank0s(before, gather_all(module_state(model)))


@four_ranks
@pytest.mark.zoo("mlp")
def test_averaged_gradients_equal_the_full_batch_gradients_on_four_ranks(dist_env, model):
    spec, dtype, device = model_spec(model), torch.float64, dist_env.device
    if reason := shards_unlike_the_batch(spec):
        pytest.skip(reason)
    rank, world = dist_env.rank, dist_env.world_size
    reference, local = comparable(spec, dtype, device), comparable(spec, dtype, device)
    ddp = dist_env.ddp(local)
    batches = [global_batch(spec, world, dtype, device, seed=1 + step) for step in range(STEPS)]
    sgd, loss = SGD_MOMENTUM, shard_loss(spec)
    ddp_run = run_steps(ddp, local, [shard_rows(b, rank, world) for b in batches], loss, sgd)
    single_run = run_steps(reference, reference, batches, loss, sgd)
    kind = device.type
    assert_gradients_match(ddp_run, single_run, rank=rank, world_size=world, device_kind=kind)
    assert_parameters_match(ddp_run, single_run, rank=rank, device_kind=kind)


@four_ranks
@pytest.mark.parametrize("op", ["SUM", "MAX"])
def test_all_reduce_combines_four_ranks_values(dist_env, op):
    tensor = contribution(op, dist_env.rank, 13, torch.float32, dist_env.world_size).to(
        dist_env.device
    )
    dist.all_reduce(tensor, op=reduce_op(op))
    assert_close(
        tensor.cpu(),
        expected_reduction(op, dist_env.world_size, 13, torch.float32),
        device_kind=dist_env.device.type,
        what=f"rank {dist_env.rank}: all_reduce {op}",
    )


@four_ranks
def test_all_to_all_single_with_uneven_splits_on_four_ranks(dist_env):
    rank, world, device, dtype = dist_env.rank, dist_env.world_size, dist_env.device, torch.int64
    reason = unsupported("all_to_all_single", dist_env.backend, device, dtype)
    if reason:
        pytest.skip(f"{dist_env.backend}: {reason}")
    send = torch.cat([exchange_values(rank, d, dtype) for d in range(world)]).to(device)
    out_splits = [split_size(s, rank) for s in range(world)]
    output = torch.zeros(sum(out_splits), dtype=dtype, device=device)
    dist.all_to_all_single(
        output,
        send,
        output_split_sizes=out_splits,
        input_split_sizes=[split_size(rank, d) for d in range(world)],
    )
    expected = torch.cat([exchange_values(s, rank, dtype) for s in range(world)])
    assert torch.equal(output.cpu(), expected), (
        f"rank {rank}: all_to_all_single with splits {out_splits} gave {output.tolist()}, "
        f"expected {expected.tolist()}"
    )
