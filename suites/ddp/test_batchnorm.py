"""Claims: BatchNorm under DDP normalises per rank; SyncBatchNorm over the global batch.

Each rank feeds its own shard of a global batch. Plain ``BatchNorm1d`` updates its running
statistics from its own shard alone: they equal a single process's BatchNorm run on that
shard, and they differ between ranks. ``SyncBatchNorm`` computes batch statistics over
every rank's rows: its outputs, running statistics and gradients equal a single process's
BatchNorm on the full batch. SyncBatchNorm needs CUDA (or XPU) tensors, so that claim is
skipped on the CPU.
"""

import pytest
import torch
from torch import nn

from harness.ddp_checks.data import mean_loss, random_rows, shard_rows
from harness.ddp_checks.modules import NormNet, build
from harness.ddp_checks.ranks import gather_all
from harness.tolerances import assert_close

ROWS_PER_RANK = 4


def _full_batch(dist_env, dtype: torch.dtype) -> torch.Tensor:
    rows = ROWS_PER_RANK * dist_env.world_size
    return random_rows(rows, 16, dtype, dist_env.device, seed=30)


def _running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buffer.detach().clone()
        for name, buffer in model.norm.named_buffers()
        if name.startswith("running_")
    }


@pytest.mark.distributed(world_size=2)
def test_plain_batchnorm_keeps_each_ranks_own_running_statistics(dist_env):
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device
    model = build(NormNet, 0, torch.float64, device)
    own = build(NormNet, 0, torch.float64, device)  # single process, this rank's shard only
    ddp = dist_env.ddp(model)
    shard = shard_rows(_full_batch(dist_env, torch.float64), rank, world)
    mean_loss(ddp(shard)).backward()
    own(shard)
    stats = _running_stats(model)
    per_rank = gather_all(stats)

    for name, value in _running_stats(own).items():
        assert_close(
            stats[name],
            value,
            device_kind=device.type,
            what=f"rank {rank}: BatchNorm {name} vs a single process on this rank's shard",
        )
    for name, values in per_rank.items():
        assert not all(torch.equal(v, values[0]) for v in values[1:]), (
            f"plain BatchNorm's {name} is the same on every rank, though each rank saw its "
            f"own shard"
        )


@pytest.mark.distributed(world_size=2)
def test_sync_batchnorm_statistics_equal_full_batch_statistics(dist_env):
    if dist_env.device.type == "cpu":
        pytest.skip("SyncBatchNorm needs CUDA or XPU tensors; torch raises on CPU tensors")
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device
    dtype = torch.float32
    model = nn.SyncBatchNorm.convert_sync_batchnorm(build(NormNet, 0, dtype, device))
    reference = build(NormNet, 0, dtype, device)
    ddp = dist_env.ddp(model)
    full = _full_batch(dist_env, dtype)
    out = ddp(shard_rows(full, rank, world))
    mean_loss(out).backward()
    full_out = reference(full)
    mean_loss(full_out).backward()

    kind = device.type
    assert_close(
        out, shard_rows(full_out, rank, world), device_kind=kind, what=f"rank {rank}: output"
    )
    expected = _running_stats(reference)
    for name, value in _running_stats(model).items():
        assert_close(
            value, expected[name], device_kind=kind, what=f"rank {rank}: SyncBatchNorm {name}"
        )
    grads = {name: p.grad for name, p in reference.named_parameters()}
    for name, param in model.named_parameters():
        assert_close(param.grad, grads[name], device_kind=kind, what=f"rank {rank}: grad {name}")
