"""Claims: the training loops real code wraps around DDP work on every rank as in one process.

Each loop is shown twice, as in ``suites/dp/test_training_loops.py``: the broken pattern fails
as documented, the correct one holds. Every model (``--model``, else the zoo models named),
compared with dropout off; every test runs on every rank.

- Checkpoints: the wrapper's ``state_dict`` keys carry ``module.``, so that checkpoint does not
  load into a plain model. Rank 0 saves ``model.module.state_dict()`` and the optimizer's state
  (Adam) to a file; every rank loads what rank 0 wrote into a model built from its own seed and
  then holds bitwise rank 0's parameters, buffers and optimizer state, and training on goes as
  if never interrupted.
- Mixed precision with ``torch.amp.GradScaler``: an inf in the gradient of one rank (the last)
  makes every rank skip that step, at the scale one process has at every step, and the ranks'
  parameters stay identical; without a scaler the inf reaches every rank's parameters.
- Gradient accumulation: N micro-batches, all but the last inside ``no_sync``, each loss divided
  by N, then one optimizer step, give the gradients and parameters of one step on a global batch
  N times larger; not dividing gives N times the gradients.
- Determinism: training twice from one seed gives bitwise the same parameters on every rank (on
  CUDA under ``torch.use_deterministic_algorithms``, which needs ``CUBLAS_WORKSPACE_CONFIG``;
  NCCL's reductions are deterministic for one configuration in practice, not by promise).
"""

import io
import tempfile
from pathlib import Path

import pytest
import torch

from harness.ddp_checks.data import global_batch, shard_loss, shard_rows, shards_unlike_the_batch
from harness.ddp_checks.features import missing_feature
from harness.ddp_checks.ranks import (
    assert_every_rank_holds_rank0s,
    assert_same_on_every_rank,
    from_rank0,
    gather_all,
    gather_from_ranks,
    module_state,
)
from harness.ddp_checks.training import assert_parameters_match, sgd
from harness.loops import (
    accumulate,
    bitwise_problem,
    checkpoint,
    determinism_unavailable,
    deterministic_algorithms,
    grad_scaler,
    in_precision_of,
    named_gradients,
    named_parameters,
    non_finite,
    optimizer_tensors,
    prefix_problem,
    restore,
    scaled_steps,
    scales,
)
from harness.model_specs import model_spec
from harness.tolerances import assert_close
from harness.training import OPTIMIZERS, comparable, concatenate, train_steps

STEPS = 3
SCALED_STEPS = 4
POISONED_STEP = 1
MICRO_BATCHES = 3
DTYPE = torch.float64  # where the claim compares with one process; float32 for the scaler
ADAM = OPTIMIZERS["adam"]


def _shards(dist_env, spec, count: int, dtype=DTYPE, first_seed: int = 1):
    world, rank = dist_env.world_size, dist_env.rank
    return [
        shard_rows(
            global_batch(spec, world, dtype, dist_env.device, seed=first_seed + i), rank, world
        )
        for i in range(count)
    ]


# ------------------------------------------------------------ checkpoints


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "cnn_bn")
def test_ddp_state_dict_keys_carry_the_module_prefix(dist_env, model):
    spec = model_spec(model)
    inner = comparable(spec, DTYPE, dist_env.device)
    problem = prefix_problem(dist_env.ddp(inner), inner)
    if problem is not None:
        pytest.fail(f"rank {dist_env.rank}: {problem}", pytrace=False)


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "cnn_bn")
def test_ddp_state_dict_does_not_load_into_a_plain_model(dist_env, model):
    """The broken pattern: the wrapper's ``state_dict`` saved, loaded into the bare model."""
    spec = model_spec(model)
    inner = comparable(spec, DTYPE, dist_env.device)
    if not inner.state_dict():
        pytest.skip(f"not applicable: {spec.name} has no parameters or buffers")
    wrapped_state = dist_env.ddp(inner).state_dict()
    plain = comparable(spec, DTYPE, dist_env.device, seed=7)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\)"):
        plain.load_state_dict(wrapped_state)


def _rank0_checkpoint(dist_env, module, optimizers) -> dict:
    """Rank 0 saves to a file; every rank loads what it wrote, onto its own device."""
    data = None
    if dist_env.rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "checkpoint.pt"
            torch.save(checkpoint(module, optimizers), path)
            data = path.read_bytes()
    return torch.load(io.BytesIO(from_rank0(data)), map_location=dist_env.device, weights_only=True)


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "cnn_bn")
def test_rank0_checkpoint_gives_every_rank_its_state_and_training_resumes(dist_env, model):
    spec = model_spec(model)
    rank, device = dist_env.rank, dist_env.device
    loss = shard_loss(spec)
    shards = _shards(dist_env, spec, 2 * STEPS)
    local = comparable(spec, DTYPE, device)
    ddp = dist_env.ddp(local)
    optimizers = ADAM.build(local)
    train_steps(ddp, local, shards[:STEPS], loss, optimizers)
    state = _rank0_checkpoint(dist_env, ddp.module, optimizers)
    saved = gather_all(module_state(local) | optimizer_tensors(optimizers))

    fresh = comparable(spec, DTYPE, device, seed=100 + rank)  # each rank's own values
    fresh_optimizers = ADAM.build(fresh)
    restore(state, fresh, fresh_optimizers)
    loaded = gather_all(module_state(fresh) | optimizer_tensors(fresh_optimizers))
    assert_every_rank_holds_rank0s(saved, loaded)

    uninterrupted = train_steps(ddp, local, shards[STEPS:], loss, optimizers)
    resumed = train_steps(dist_env.ddp(fresh), fresh, shards[STEPS:], loss, fresh_optimizers)
    assert_parameters_match(resumed, uninterrupted, rank=rank, device_kind=device.type)


# ------------------------------------------------------------ mixed precision


def _scaled(dist_env, model: str, *, scaler: bool):
    """This rank's run of the GradScaler recipe in float32, the last rank's gradient poisoned
    at ``POISONED_STEP``; and one process's on the full batches, poisoned there too."""
    spec = model_spec(model)
    world, device = dist_env.world_size, dist_env.device
    loss = shard_loss(spec)
    local = comparable(spec, torch.float32, device)
    ddp = dist_env.ddp(local)
    poisoned = {POISONED_STEP} if dist_env.rank == world - 1 else set()
    got = scaled_steps(
        ddp,
        local,
        _shards(dist_env, spec, SCALED_STEPS, torch.float32),
        loss,
        sgd(local),
        grad_scaler(device) if scaler else None,
        poisoned=poisoned,
    )
    single = comparable(spec, torch.float32, device)
    batches = [
        global_batch(spec, world, torch.float32, device, seed=1 + i) for i in range(SCALED_STEPS)
    ]
    want = scaled_steps(
        single,
        single,
        batches,
        loss,
        sgd(single),
        grad_scaler(device) if scaler else None,
        poisoned={POISONED_STEP},
    )
    return got, want


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "transformer")
def test_inf_gradient_on_one_rank_makes_every_rank_skip_the_step(dist_env, model):
    got, want = _scaled(dist_env, model, scaler=True)
    last = dist_env.world_size - 1
    skipped = gather_from_ranks(torch.tensor([step.skipped for step in got]))
    scale_seen = gather_from_ranks(torch.tensor(scales(got), dtype=torch.float64))
    want_skipped = [step.skipped for step in want]
    assert want_skipped == [s == POISONED_STEP for s in range(SCALED_STEPS)], (
        f"precondition: one process skipped steps {want_skipped}, not the poisoned one alone"
    )
    for rank, flags in enumerate(skipped):
        assert flags.tolist() == want_skipped, (
            f"rank {rank} skipped steps {[s for s, f in enumerate(flags.tolist()) if f]}; with "
            f"an inf in rank {last}'s gradient at step {POISONED_STEP} every rank must skip it "
            "(the all-reduce carries the inf to every rank's scaler)"
        )
    for rank, seen in enumerate(scale_seen):
        assert seen.tolist() == scales(want), (
            f"rank {rank}'s scale after each step: {seen.tolist()}; one process: {scales(want)}"
        )
    assert_same_on_every_rank(
        dict(got[-1].params),
        what=f"after {SCALED_STEPS} scaled steps",
        exact=dist_env.device.type == "cpu",
        device_kind=dist_env.device.type,
    )


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "transformer")
def test_without_a_scaler_one_ranks_inf_reaches_every_ranks_parameters(dist_env, model):
    """The broken pattern: ``optimizer.step()`` on raw gradients steps on the overflow."""
    got, want = _scaled(dist_env, model, scaler=False)
    assert non_finite(want[POISONED_STEP].params), "precondition: in one process the inf got in"
    reached = gather_from_ranks(torch.tensor(bool(non_finite(got[POISONED_STEP].params))))
    clean = [rank for rank, flag in enumerate(reached) if not flag.item()]
    assert not clean, (
        f"the inf in rank {dist_env.world_size - 1}'s gradient reached no parameter on ranks "
        f"{clean}: the implementation dropped or sanitised it before or in the all-reduce, so a "
        "scaler could not see the overflow either"
    )


# ------------------------------------------------------------ gradient accumulation


def _accumulation(dist_env, model: str, *, divide: bool):
    """(this rank's gradients accumulated over micro-batches with no_sync, one process's on
    the global batch of all of them, and the parameters after one optimizer step each), in the
    precision of the model's loss (``in_precision_of``)."""
    spec = model_spec(model)
    if reason := shards_unlike_the_batch(spec):
        pytest.skip(reason)
    world, rank, device = dist_env.world_size, dist_env.rank, dist_env.device
    loss = shard_loss(spec)
    local = comparable(spec, DTYPE, device)
    ddp = dist_env.ddp(local)
    if reason := missing_feature(ddp, "no_sync", dist_env.ddp_impl):
        pytest.skip(reason)
    micro = [global_batch(spec, world, DTYPE, device, seed=10 + m) for m in range(MICRO_BATCHES)]
    shards = [shard_rows(batch, rank, world) for batch in micro]
    got = accumulate(ddp, local, shards, loss, divide=divide, quiet=ddp.no_sync)
    sgd(local).step()

    single = comparable(spec, DTYPE, device)
    args, kwargs = concatenate(micro)
    value = loss(single(*args, **kwargs))
    value.backward()
    want = named_gradients(single)
    sgd(single).step()
    return in_precision_of(value, got, want, named_parameters(local), named_parameters(single))


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "transformer")
def test_accumulation_with_no_sync_gives_one_step_on_a_batch_n_times_larger(dist_env, model):
    got, want, got_params, want_params = _accumulation(dist_env, model, divide=True)
    rank, n = dist_env.rank, MICRO_BATCHES
    for name, grad in want.items():
        what = (
            f"rank {rank}: gradient of {name} after {n} micro-batches ({n - 1} in no_sync, "
            f"loss / {n}) vs one process's on the {n} times larger global batch"
        )
        assert got[name] is not None, f"{what}: missing"
        assert_close(got[name], grad, device_kind=dist_env.device.type, what=what)
    assert_close(
        got_params,
        want_params,
        device_kind=dist_env.device.type,
        what=f"rank {rank}, after the one optimizer step",
    )


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp")
def test_accumulating_without_dividing_the_loss_gives_n_times_the_gradients(dist_env, model):
    """The broken pattern: each micro-batch's loss not divided by their number."""
    got, want, _, _ = _accumulation(dist_env, model, divide=False)
    n = MICRO_BATCHES
    for name, grad in want.items():
        what = f"rank {dist_env.rank}: gradient of {name} over {n} undivided micro-batches"
        assert got[name] is not None, f"{what}: missing"
        assert_close(got[name], grad * n, device_kind=dist_env.device.type, what=f"{what} / {n}")


# ------------------------------------------------------------ determinism


@pytest.mark.distributed(world_size=2)
@pytest.mark.zoo("mlp", "transformer")
def test_the_same_seed_trains_to_bitwise_the_same_parameters_twice(dist_env, model):
    spec = model_spec(model)
    device_type = dist_env.device.type
    if reason := determinism_unavailable(device_type):
        pytest.skip(reason)
    shards = _shards(dist_env, spec, STEPS)
    runs = []
    with deterministic_algorithms(device_type):
        for _ in range(2):
            local = comparable(spec, DTYPE, dist_env.device, seed=0)
            ddp = dist_env.ddp(local)
            runs.append(train_steps(ddp, local, shards, shard_loss(spec), [sgd(local)]))
    for step, (first, second) in enumerate(zip(*runs)):
        problem = bitwise_problem(
            first.params,
            second.params,
            what=f"rank {dist_env.rank}, second run from the same seed, after step {step}",
        )
        if problem is not None:
            pytest.fail(problem, pytrace=False)
