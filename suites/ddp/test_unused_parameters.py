"""Claims: parameters that forward does not use.

Without ``find_unused_parameters`` DDP waits for a gradient that never comes: training
fails with a RuntimeError by the second iteration (torch raises at the second forward; an
implementation may raise as early as the end of the first backward). With
``find_unused_parameters=True`` training works: the used parameters' gradients and values
equal the single-process ones, and the unused parameter is left as it was.
"""

import pytest
import torch

from harness.ddp_checks.data import mean_loss, random_rows, shard_rows
from harness.ddp_checks.modules import PartlyUsed, build
from harness.ddp_checks.training import (
    SGD_MOMENTUM,
    assert_gradients_match,
    assert_parameters_match,
)
from harness.training import run_steps

STEPS = 3
DTYPE = torch.float64


def _batches(dist_env, steps: int) -> list[tuple[tuple, dict]]:
    rows = 3 * dist_env.world_size
    return [((random_rows(rows, 16, DTYPE, dist_env.device, seed=s),), {}) for s in range(steps)]


@pytest.mark.distributed(world_size=2)
def test_unused_parameter_without_find_unused_parameters_fails_by_the_second_iteration(dist_env):
    ddp = dist_env.ddp(build(PartlyUsed, 0, DTYPE, dist_env.device))
    shards = [shard_rows(b, dist_env.rank, dist_env.world_size) for b in _batches(dist_env, 2)]
    try:
        for (x,), _ in shards:
            mean_loss(ddp(x)).backward()
    except RuntimeError:
        return
    pytest.fail(
        f"rank {dist_env.rank}: two iterations with a parameter unused in forward and "
        f"find_unused_parameters=False raised no RuntimeError"
    )


@pytest.mark.distributed(world_size=2)
def test_find_unused_parameters_trains_with_single_process_gradients(dist_env):
    rank, world, device = dist_env.rank, dist_env.world_size, dist_env.device
    local = build(PartlyUsed, 0, DTYPE, device)
    reference = build(PartlyUsed, 0, DTYPE, device)
    unused_before = {n: p.detach().clone() for n, p in local.unused.named_parameters()}
    ddp = dist_env.ddp(local, find_unused_parameters=True)
    batches = _batches(dist_env, STEPS)
    sgd = SGD_MOMENTUM
    ddp_run = run_steps(ddp, local, [shard_rows(b, rank, world) for b in batches], mean_loss, sgd)
    single_run = run_steps(reference, reference, batches, mean_loss, sgd)

    unused = {f"unused.{name}" for name in unused_before}
    assert_gradients_match(
        ddp_run, single_run, rank=rank, world_size=world, device_kind=device.type, skip=unused
    )
    assert_parameters_match(ddp_run, single_run, rank=rank, device_kind=device.type)
    for name, before in unused_before.items():
        assert torch.equal(getattr(local.unused, name).detach(), before), (
            f"rank {rank}: the unused parameter unused.{name} changed during training"
        )
