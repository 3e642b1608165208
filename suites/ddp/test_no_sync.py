"""Claims: ``no_sync`` defers gradient synchronisation (skipped where it is not implemented).

Gradient accumulation over micro-batches: inside ``no_sync`` each rank's backward
accumulates its own gradient without communicating, so ranks' gradients differ and each
equals what a single process gets from that rank's shards alone. The first backward
outside ``no_sync`` synchronises the whole accumulated gradient: the result equals the
single-process gradient accumulated over the full micro-batches.
"""

import pytest
import torch

from harness.ddp_checks.data import global_batch, mean_loss, shard_rows
from harness.ddp_checks.features import missing_feature
from harness.ddp_checks.ranks import gather_all
from harness.models import ZOO
from harness.tolerances import assert_close

MICRO_BATCHES = 3  # all but the last inside no_sync
DTYPE = torch.float64


def _setup(dist_env):
    """(DDP-wrapped MLP, its inner module, the global micro-batches)."""
    spec = ZOO["mlp"]
    local = spec.make(DTYPE, dist_env.device)
    ddp = dist_env.ddp(local)
    if reason := missing_feature(ddp, "no_sync", dist_env.ddp_impl):
        pytest.skip(reason)
    batches = [
        global_batch(spec, dist_env.world_size, DTYPE, dist_env.device, seed=10 + m)
        for m in range(MICRO_BATCHES)
    ]
    return ddp, local, batches


def _backward(module, batch) -> None:
    args, kwargs = batch
    mean_loss(module(*args, **kwargs)).backward()


def _grads(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()}


@pytest.mark.distributed(world_size=2)
def test_no_sync_accumulates_each_ranks_own_gradients_without_communication(dist_env):
    rank, world = dist_env.rank, dist_env.world_size
    ddp, local, batches = _setup(dist_env)
    own = ZOO["mlp"].make(DTYPE, dist_env.device)  # single process, this rank's shards only
    with ddp.no_sync():
        for batch in batches[:-1]:
            _backward(ddp, shard_rows(batch, rank, world))
            _backward(own, shard_rows(batch, rank, world))
    inside = _grads(local)
    per_rank = gather_all(inside)

    for name, grad in _grads(own).items():
        assert_close(
            inside[name],
            grad,
            device_kind=dist_env.device.type,
            what=f"rank {rank}, inside no_sync: gradient of {name} (must be this rank's own "
            f"accumulated gradient, uncommunicated)",
        )
    for name, grads in per_rank.items():
        assert not all(torch.equal(g, grads[0]) for g in grads[1:]), (
            f"inside no_sync every rank holds the same gradient of {name}: they were "
            f"synchronised, though each rank had its own shards"
        )


@pytest.mark.distributed(world_size=2)
def test_first_backward_after_no_sync_synchronises_the_accumulated_gradients(dist_env):
    rank, world = dist_env.rank, dist_env.world_size
    ddp, local, batches = _setup(dist_env)
    with ddp.no_sync():
        for batch in batches[:-1]:
            _backward(ddp, shard_rows(batch, rank, world))
    _backward(ddp, shard_rows(batches[-1], rank, world))

    reference = ZOO["mlp"].make(DTYPE, dist_env.device)
    for batch in batches:
        _backward(reference, batch)
    got = _grads(local)
    for name, grad in _grads(reference).items():
        assert_close(
            got[name],
            grad,
            device_kind=dist_env.device.type,
            what=f"rank {rank}: gradient of {name} after {MICRO_BATCHES - 1} micro-batches "
            f"in no_sync and one outside, vs the single-process accumulated gradient",
        )
