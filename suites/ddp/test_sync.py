"""Claims: DDP makes the ranks' replicas one model, and that model trains like one process.

Every test runs on every rank (SPMD) and holds for any world size of two or more.

- Wrapping copies rank 0's parameters and buffers to every rank, bitwise, even when the
  ranks built their models from different seeds.
- Averaged gradients: each rank takes an equal shard of a global batch that every rank
  builds from a shared seed; with a mean loss, the gradients after DDP's backward equal the
  gradients a single process computes on the full batch (every rank runs that process
  locally), step after step of SGD with momentum, and so do the parameters.
- The ranks' parameters stay identical during training: bitwise on the CPU.
- Buffers: rank 0's buffers are broadcast at the start of every forward, so a module that
  reports its buffer and then updates it by a rank-dependent amount reports rank 0's value
  on every rank; with ``broadcast_buffers=False`` each rank keeps its own.
"""

import pytest
import torch

from harness.ddp_checks.data import (
    global_batch,
    mean_loss,
    random_rows,
    shard_loss,
    shard_rows,
    shards_unlike_the_batch,
)
from harness.ddp_checks.features import quiet_broadcast_buffers_deprecation
from harness.ddp_checks.modules import StepBuffer, build, randomise_state
from harness.ddp_checks.ranks import (
    assert_every_rank_holds_rank0s,
    assert_ranks_differ,
    assert_same_on_every_rank,
    gather_all,
    module_state,
)
from harness.ddp_checks.training import (
    SGD_MOMENTUM,
    assert_gradients_match,
    assert_parameters_match,
    sgd,
)
from harness.model_specs import model_spec
from harness.models import ZOO
from harness.training import comparable, run_steps

STEPS = 3
DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]
# Models whose full-batch gradient is the average of equal shards' (not BatchNorm), with
# tensor, keyword, recurrent and dict/namedtuple inputs and outputs.
ZOO_MODELS = ("mlp", "transformer", "gru", "nested_outputs")


# ------------------------------------------------------------ initial synchronisation


@pytest.mark.distributed(world_size=2)
def test_wrapping_gives_every_rank_rank0s_parameters_and_buffers(dist_env):
    """A CNN with BatchNorm, its parameters and buffers drawn from rank-dependent seeds."""
    rank = dist_env.rank
    model = ZOO["cnn_bn"].make(torch.float64, dist_env.device, seed=100 + rank)
    randomise_state(model, seed=200 + rank)
    before = gather_all(module_state(model))
    assert_ranks_differ(before, what="ranks built their models from different seeds")

    dist_env.ddp(model)

    assert_every_rank_holds_rank0s(before, gather_all(module_state(model)))


# ------------------------------------------------------------ gradients and parameters


def _spec(model: str):
    spec = model_spec(model)
    if reason := shards_unlike_the_batch(spec):
        pytest.skip(reason)
    return spec


def _train(dist_env, model: str, dtype: torch.dtype):
    """(DDP run on this rank's shards, single-process run on the full batches)."""
    spec = _spec(model)
    world, rank, device = dist_env.world_size, dist_env.rank, dist_env.device
    reference = comparable(spec, dtype, device)
    local = comparable(spec, dtype, device)
    ddp = dist_env.ddp(local)
    batches = [global_batch(spec, world, dtype, device, seed=1 + step) for step in range(STEPS)]
    shards = [shard_rows(batch, rank, world) for batch in batches]
    sgd, loss = SGD_MOMENTUM, shard_loss(spec)
    return run_steps(ddp, local, shards, loss, sgd), run_steps(
        reference, reference, batches, loss, sgd
    )


@pytest.mark.distributed(world_size=2)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.zoo(*ZOO_MODELS)
def test_averaged_gradients_equal_single_process_full_batch_gradients(dist_env, model, dtype):
    ddp_run, single_run = _train(dist_env, model, dtype)
    assert_gradients_match(
        ddp_run,
        single_run,
        rank=dist_env.rank,
        world_size=dist_env.world_size,
        device_kind=dist_env.device.type,
    )
    assert_parameters_match(
        ddp_run, single_run, rank=dist_env.rank, device_kind=dist_env.device.type
    )


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "transformer")
def test_parameters_stay_identical_across_ranks_during_training(dist_env, model):
    """float32, where a different summation order would show; bitwise on the CPU. Holds for
    batch-dependent models too: the averaged gradient and rank 0's buffers are the same on
    every rank, whatever each rank's shard."""
    spec = model_spec(model)
    world, rank, device = dist_env.world_size, dist_env.rank, dist_env.device
    local = comparable(spec, torch.float32, device)
    ddp = dist_env.ddp(local)
    optimizer = sgd(local)
    for step in range(STEPS):
        args, kwargs = shard_rows(
            global_batch(spec, world, torch.float32, device, step), rank, world
        )
        optimizer.zero_grad()
        shard_loss(spec)(ddp(*args, **kwargs)).backward()
        optimizer.step()
        assert_same_on_every_rank(
            dict(local.named_parameters()),
            what=f"after step {step}",
            exact=device.type == "cpu",
            device_kind=device.type,
        )


# ------------------------------------------------------------ buffers


def _buffer_values_seen(dist_env, **ddp_kwargs) -> list[float]:
    """The buffer ``StepBuffer`` reports at each of STEPS forwards; rank r adds r + 1 each time."""
    model = build(StepBuffer, 0, torch.float64, dist_env.device, step=float(dist_env.rank + 1))
    with quiet_broadcast_buffers_deprecation():
        ddp = dist_env.ddp(model, **ddp_kwargs)
    x = random_rows(3, 4, torch.float64, dist_env.device, seed=dist_env.rank)
    seen = []
    for _ in range(STEPS):
        out, total = ddp(x)
        mean_loss(out).backward()
        seen.append(total.item())
    return seen


@pytest.mark.distributed(world_size=2)
def test_rank0_buffers_are_broadcast_at_the_start_of_every_forward(dist_env):
    seen = _buffer_values_seen(dist_env)
    rank0 = [float(step) for step in range(STEPS)]
    own = [float(step * (dist_env.rank + 1)) for step in range(STEPS)]
    assert seen == rank0, (
        f"rank {dist_env.rank}'s forwards started from buffer values {seen}; rank 0's are "
        f"{rank0}" + (" (these are this rank's own updates)" if seen == own else "")
    )


@pytest.mark.distributed(world_size=2)
def test_buffers_stay_local_with_broadcast_buffers_false(dist_env):
    seen = _buffer_values_seen(dist_env, broadcast_buffers=False)
    own = [float(step * (dist_env.rank + 1)) for step in range(STEPS)]
    assert seen == own, (
        f"with broadcast_buffers=False rank {dist_env.rank}'s forwards started from buffer "
        f"values {seen}, not its own {own}"
    )
