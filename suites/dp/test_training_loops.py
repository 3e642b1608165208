"""Claims: the training loops real code wraps around DataParallel work as they do on one device.

Each loop is shown twice, as the RNN caveats are: the broken pattern fails as documented, the
correct one gives what one device gives. Every model (``--model``, else the zoo) runs, compared
with dropout off (``harness.training.comparable``).

- Checkpoints: the wrapper's ``state_dict`` keys are the inner module's with ``module.`` in
  front, so that checkpoint does not load into a plain model; ``model.module.state_dict()`` and
  the optimizer's state, saved to a file, load into a plain model built from another seed,
  bitwise, and training it wrapped again goes on as if never interrupted.
- Mixed precision with ``torch.amp.GradScaler``: an inf in the last replica's gradient makes
  the scaler skip that step and back off, as on one device, with the same scale at every step
  and the same parameters; without a scaler, the inf reaches the parameters.
- Gradient accumulation: N micro-batches, each loss divided by N, and one optimizer step give
  the gradients and parameters of one step on a batch N times larger; not dividing gives N
  times the gradients. Not for batch-dependent models (BatchNorm normalises each micro-batch by
  its own statistics).
- Determinism: training twice from one seed gives bitwise the same parameters (on CUDA under
  ``torch.use_deterministic_algorithms``, which needs ``CUBLAS_WORKSPACE_CONFIG``).
"""

import pytest
import torch

from harness.ddp_checks.data import shard_loss
from harness.devices import DeviceSet
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
    skipped_steps,
    state_copy,
)
from harness.model_specs import model_spec, traits
from harness.models import ModelSpec
from harness.plugin.options import chosen_devices
from harness.tolerances import assert_close
from harness.training import (
    OPTIMIZERS,
    assert_gatherable,
    assert_runs_close,
    comparable,
    concatenate,
    dtypes_for,
    single_device_forward,
    train_steps,
    uneven_batch,
)

STEPS = 3  # per half of a checkpointed run; in the determinism claim
SCALED_STEPS = 4
POISONED_STEP = 1  # an inf in the last replica's gradient at this step
MICRO_BATCHES = 3
SGD, ADAM = OPTIMIZERS["sgd_momentum"], OPTIMIZERS["adam"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # As in test_sync.py: float64 and float32 on the CPU, float32 on CUDA.
    if "train_dtype" in metafunc.fixturenames:
        kind = chosen_devices(metafunc.config).kind
        metafunc.parametrize(
            "train_dtype", dtypes_for(kind), ids=lambda d: str(d).removeprefix("torch.")
        )


def _batches(spec: ModelSpec, dtype, devices: DeviceSet, count: int, first_seed: int = 1):
    rows = uneven_batch(devices.count)
    return [
        spec.make_inputs(rows, dtype, devices.primary, seed=first_seed + i) for i in range(count)
    ]


def _gatherable(spec: ModelSpec, module, batch) -> None:
    """Fail first, naming the output and the remedy, if data parallelism cannot gather it."""
    args, kwargs = batch
    with torch.no_grad():
        assert_gatherable(module(*args, **kwargs))


# ------------------------------------------------------------ checkpoints


def test_wrapped_state_dict_keys_carry_the_module_prefix(
    model: str, precise_dtype: torch.dtype, devices: DeviceSet, data_parallel
) -> None:
    spec = model_spec(model)
    inner = comparable(spec, precise_dtype, devices.primary)
    problem = prefix_problem(data_parallel(inner), inner)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def test_wrapped_state_dict_does_not_load_into_a_plain_model(
    model: str, precise_dtype: torch.dtype, devices: DeviceSet, data_parallel
) -> None:
    """The broken pattern: ``torch.save(model.state_dict())`` of the wrapper, loaded into the
    bare model. Save ``model.module.state_dict()`` instead (the next claim)."""
    spec = model_spec(model)
    inner = comparable(spec, precise_dtype, devices.primary)
    if not inner.state_dict():
        pytest.skip(f"not applicable: {spec.name} has no parameters or buffers")
    wrapped_state = data_parallel(inner).state_dict()
    plain = comparable(spec, precise_dtype, devices.primary, seed=7)
    with pytest.raises(RuntimeError, match=r"Missing key\(s\)"):
        plain.load_state_dict(wrapped_state)


def test_inner_checkpoint_loads_into_a_plain_model_and_resumes_as_if_uninterrupted(
    model: str, train_dtype: torch.dtype, devices: DeviceSet, data_parallel, tmp_path
) -> None:
    """Adam (SparseAdam for sparse embeddings), whose state is more than the parameters."""
    spec = model_spec(model)
    device = devices.primary
    batches = _batches(spec, train_dtype, devices, 2 * STEPS)
    inner = comparable(spec, train_dtype, device)
    _gatherable(spec, inner, batches[0])
    optimizers = ADAM.build(inner)
    wrapped = data_parallel(inner)
    train_steps(wrapped, inner, batches[:STEPS], spec.loss, optimizers)
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint(wrapped.module, optimizers), path)
    saved_model, saved_optimizers = state_copy(inner), optimizer_tensors(optimizers)
    uninterrupted = train_steps(wrapped, inner, batches[STEPS:], spec.loss, optimizers)

    plain = comparable(spec, train_dtype, device, seed=7)
    plain_optimizers = ADAM.build(plain)
    restore(torch.load(path, map_location=device, weights_only=True), plain, plain_optimizers)
    for problem in (
        bitwise_problem(saved_model, plain.state_dict(), what="model state after loading"),
        bitwise_problem(
            saved_optimizers, optimizer_tensors(plain_optimizers), what="optimizer state"
        ),
    ):
        if problem is not None:
            pytest.fail(problem, pytrace=False)

    resumed = train_steps(data_parallel(plain), plain, batches[STEPS:], spec.loss, plain_optimizers)
    assert_runs_close(resumed, uninterrupted, device_kind=devices.kind)


# ------------------------------------------------------------ mixed precision


def _scaled_runs(spec: ModelSpec, devices: DeviceSet, data_parallel, *, scaler: bool):
    """``(data-parallel run, single-device run)`` of the GradScaler recipe in float32, the
    step ``POISONED_STEP`` getting an inf in the last row's gradient (the last replica's)."""
    dtype, device = torch.float32, devices.primary
    batches = _batches(spec, dtype, devices, SCALED_STEPS)
    single, inner = comparable(spec, dtype, device), comparable(spec, dtype, device)
    _gatherable(spec, single, batches[0])
    runs = []
    for forward, module in (
        (data_parallel(inner), inner),
        (single_device_forward(spec, single, devices.count), single),
    ):
        runs.append(
            scaled_steps(
                forward,
                module,
                batches,
                spec.loss,
                SGD.build(module)[0],
                grad_scaler(device) if scaler else None,
                poisoned={POISONED_STEP},
            )
        )
    return runs


def test_grad_scaler_skips_the_same_steps_at_the_same_scale_as_one_device(
    model: str, devices: DeviceSet, data_parallel
) -> None:
    spec = model_spec(model)
    got, want = _scaled_runs(spec, devices, data_parallel, scaler=True)
    assert skipped_steps(want) == [POISONED_STEP], (
        f"precondition: on one device the scaler skipped steps {skipped_steps(want)}, not the "
        f"poisoned step {POISONED_STEP} alone"
    )
    assert skipped_steps(got) == skipped_steps(want), (
        f"under data parallelism the scaler skipped steps {skipped_steps(got)}, one device "
        f"skipped {skipped_steps(want)}: an inf in the last replica's gradient must reach the "
        "summed gradient the scaler checks"
    )
    assert scales(got) == scales(want), (
        f"scale after each step: {scales(got)} under data parallelism, {scales(want)} on one device"
    )
    for step, (g, w) in enumerate(zip(got, want)):
        assert_close(g.params, w.params, device_kind=devices.kind, what=f"after step {step}")


def test_without_a_scaler_one_replicas_inf_reaches_the_parameters(
    model: str, devices: DeviceSet, data_parallel
) -> None:
    """The broken pattern: ``optimizer.step()`` on the raw gradients steps on the overflow."""
    spec = model_spec(model)
    got, want = _scaled_runs(spec, devices, data_parallel, scaler=False)
    assert non_finite(want[POISONED_STEP].params), "precondition: on one device the inf got in"
    assert non_finite(got[POISONED_STEP].params), (
        "the inf in the last replica's gradient did not reach any parameter: the implementation "
        "dropped or sanitised it, so a scaler could not see the overflow either"
    )


# ------------------------------------------------------------ gradient accumulation


def _accumulation(model: str, dtype, devices: DeviceSet, data_parallel, *, divide: bool):
    """(accumulated gradients under data parallelism, one-batch gradients on one device, the
    parameters after one optimizer step each, in the same order), in the precision of the
    model's loss (``in_precision_of``)."""
    spec = model_spec(model)
    if traits(spec).batch_dependent:
        pytest.skip(
            f"not applicable: {spec.name} normalises by batch statistics (BatchNorm), so its "
            "micro-batches are normalised one by one, not as one larger batch"
        )
    device = devices.primary
    micro = _batches(spec, dtype, devices, MICRO_BATCHES)
    whole = concatenate(micro)
    single, inner = comparable(spec, dtype, device), comparable(spec, dtype, device)
    _gatherable(spec, single, micro[0])
    single_optimizers, inner_optimizers = SGD.build(single), SGD.build(inner)

    # A zoo model's own loss computes in float32, where dividing by N rounds; this one keeps
    # the output's dtype.
    loss = shard_loss(spec)
    got = accumulate(data_parallel(inner), inner, micro, loss, divide=divide)
    for optimizer in inner_optimizers:
        optimizer.step()
    single.zero_grad(set_to_none=True)
    args, kwargs = whole
    value = loss(single(*args, **kwargs))
    value.backward()
    want = named_gradients(single)
    for optimizer in single_optimizers:
        optimizer.step()
    return in_precision_of(value, got, want, named_parameters(inner), named_parameters(single))


def test_accumulated_micro_batches_give_one_step_on_a_batch_n_times_larger(
    model: str, train_dtype: torch.dtype, devices: DeviceSet, data_parallel
) -> None:
    got, want, got_params, want_params = _accumulation(
        model, train_dtype, devices, data_parallel, divide=True
    )
    n = MICRO_BATCHES
    for name, grad in want.items():
        what = f"gradient of {name} accumulated over {n} micro-batches (loss / {n})"
        assert got[name] is not None, f"{what}: missing"
        assert_close(got[name], grad, device_kind=devices.kind, what=what)
    assert_close(
        got_params, want_params, device_kind=devices.kind, what="after the one optimizer step"
    )


def test_accumulating_without_dividing_the_loss_gives_n_times_the_gradients(
    model: str, train_dtype: torch.dtype, devices: DeviceSet, data_parallel
) -> None:
    """The broken pattern: each micro-batch's loss not divided by their number."""
    got, want, _, _ = _accumulation(model, train_dtype, devices, data_parallel, divide=False)
    n = MICRO_BATCHES
    for name, grad in want.items():
        what = f"gradient of {name} over {n} undivided micro-batches vs {n} x the one-batch one"
        assert got[name] is not None, f"{what}: missing"
        assert_close(got[name], grad * n, device_kind=devices.kind, what=what)


# ------------------------------------------------------------ determinism


def test_the_same_seed_trains_to_bitwise_the_same_parameters_twice(
    model: str, train_dtype: torch.dtype, devices: DeviceSet, data_parallel
) -> None:
    spec = model_spec(model)
    batches = _batches(spec, train_dtype, devices, STEPS)
    _gatherable(spec, comparable(spec, train_dtype, devices.primary), batches[0])
    runs = []
    if reason := determinism_unavailable(devices.kind):
        pytest.skip(reason)
    with deterministic_algorithms(devices.kind):
        for _ in range(2):
            inner = comparable(spec, train_dtype, devices.primary, seed=0)
            optimizers = ADAM.build(inner)
            runs.append(train_steps(data_parallel(inner), inner, batches, spec.loss, optimizers))
    for step, (first, second) in enumerate(zip(*runs)):
        problem = bitwise_problem(
            first.params, second.params, what=f"second run from the same seed, after step {step}"
        )
        if problem is not None:
            pytest.fail(problem, pytrace=False)
