"""Claims: ``join`` lets ranks with different numbers of batches train together.

Rank r has 2 + r batches (skipped where the implementation has no ``join``). Inside
``join()`` every rank finishes without hanging, and the ranks end with identical
parameters. Following torch's default (``divide_by_initial_world_size=True``), a rank that
ran out of batches contributes zero gradients and the sum is still divided by the initial
world size: the parameters equal those of a single process that, at step s, takes the sum
of the active ranks' shard gradients divided by the world size.
"""

import pytest
import torch

from harness.ddp_checks.data import global_batch, mean_loss, shard_rows
from harness.ddp_checks.features import missing_feature
from harness.ddp_checks.ranks import assert_same_on_every_rank
from harness.ddp_checks.training import sgd
from harness.models import ZOO
from harness.tolerances import assert_close

DTYPE = torch.float64


def _batches_of(rank: int) -> int:
    return 2 + rank


def _shard(dist_env, step: int, rank: int):
    spec = ZOO["mlp"]
    batch = global_batch(spec, dist_env.world_size, DTYPE, dist_env.device, seed=20 + step)
    return shard_rows(batch, rank, dist_env.world_size)


def _train_with_join(dist_env) -> torch.nn.Module:
    local = ZOO["mlp"].make(DTYPE, dist_env.device)
    ddp = dist_env.ddp(local)
    if reason := missing_feature(ddp, "join", dist_env.ddp_impl):
        pytest.skip(reason)
    optimizer = sgd(local, momentum=0.0)
    with ddp.join():
        for step in range(_batches_of(dist_env.rank)):
            (x,), _ = _shard(dist_env, step, dist_env.rank)
            optimizer.zero_grad()
            mean_loss(ddp(x)).backward()
            optimizer.step()
    return local


@pytest.mark.distributed(world_size=2, timeout=60)
def test_join_lets_ranks_with_uneven_inputs_finish_with_identical_parameters(dist_env):
    local = _train_with_join(dist_env)
    assert_same_on_every_rank(
        dict(local.named_parameters()),
        what=f"after join with 2 + rank batches per rank (world size {dist_env.world_size})",
        exact=dist_env.device.type == "cpu",
        device_kind=dist_env.device.type,
    )


@pytest.mark.distributed(world_size=2, timeout=60)
def test_joined_ranks_contribute_zero_gradients_over_the_initial_world_size(dist_env):
    world = dist_env.world_size
    local = _train_with_join(dist_env)

    reference = ZOO["mlp"].make(DTYPE, dist_env.device)
    optimizer = sgd(reference, momentum=0.0)
    for step in range(_batches_of(world - 1)):
        optimizer.zero_grad()
        for rank in range(world):
            if step < _batches_of(rank):
                (x,), _ = _shard(dist_env, step, rank)
                (mean_loss(reference(x)) / world).backward()
        optimizer.step()
    expected = dict(reference.named_parameters())
    for name, param in local.named_parameters():
        assert_close(
            param,
            expected[name],
            device_kind=dist_env.device.type,
            what=f"rank {dist_env.rank}: {name} after join, vs a single process summing the "
            f"active ranks' gradients over world size {world}",
        )
