"""Claims: training under DataParallel synchronises like training on one device.

Every model of the zoo is run on the single device and under the
implementation under test with the same seed and batches (float64 and
float32 on CPU, float32 on CUDA): outputs, gradients (sparse ones included)
and parameters after several optimizer steps must agree. BatchNorm in
training mode normalises each replica's chunk by that chunk's statistics, so
there the single-device side runs the same chunks one by one; in eval mode it
matches the whole batch.

Then the semantics ``torch.nn.DataParallel`` documents and the harness relies
on: gradients are summed over replicas, every replica's gradient arrives,
replicas are rebuilt from the current parameters on every forward, in-place
buffer updates survive from the first replica only, Python attribute writes
are lost, a replica's exception reaches the caller with its type, message and
replica number, and grad mode and autocast are carried into the replicas.
"""

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from harness.devices import DeviceSet
from harness.model_specs import model_spec
from harness.models import ZOO
from harness.plugin.options import chosen_devices
from harness.probes import (
    AttributeWrites,
    InPlaceBufferUpdates,
    Probe,
    chunk_bounds,
    labelled,
    labels,
    names_replica,
    replica_report,
    report_grad_mode,
    report_inference_mode,
)
from harness.tolerances import assert_close
from harness.training import (
    OPTIMIZERS,
    OptimizerRecipe,
    assert_runs_close,
    compare_runs,
    dtypes_for,
    uneven_batch,
)

STEPS = 3

OPTIMIZER_PARAMS = [pytest.param(recipe, id=recipe.name) for recipe in OPTIMIZERS.values()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # ``train_dtype``, not ``dtype``: suites/dp/conftest.py parametrises ``dtype``
    # with bfloat16 on CUDA, where several optimizer steps compared element by
    # element would measure bfloat16 rounding rather than synchronisation.
    if "train_dtype" in metafunc.fixturenames:
        kind = chosen_devices(metafunc.config).kind
        metafunc.parametrize(
            "train_dtype", dtypes_for(kind), ids=lambda d: str(d).removeprefix("torch.")
        )


Wrap = Callable[..., nn.Module]


# ------------------------------------------------------------ the model zoo


def test_outputs_and_gradients_equal_single_device(
    model: str, train_dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap
) -> None:
    dp_run, single_run = compare_runs(
        model_spec(model),
        dtype=train_dtype,
        device=devices.primary,
        wrap=data_parallel,
        replicas=devices.count,
        steps=1,
    )
    assert_runs_close(dp_run, single_run, device_kind=devices.kind)


@pytest.mark.parametrize("optimizer", OPTIMIZER_PARAMS)
def test_parameters_equal_single_device_after_optimizer_steps(
    model: str,
    optimizer: OptimizerRecipe,
    train_dtype: torch.dtype,
    devices: DeviceSet,
    data_parallel: Wrap,
) -> None:
    """SGD with momentum, and Adam (SparseAdam for sparse embeddings), STEPS steps."""
    dp_run, single_run = compare_runs(
        model_spec(model),
        dtype=train_dtype,
        device=devices.primary,
        wrap=data_parallel,
        replicas=devices.count,
        steps=STEPS,
        optimizer=optimizer,
    )
    assert_runs_close(dp_run, single_run, device_kind=devices.kind)


def test_batchnorm_in_eval_mode_matches_the_whole_batch_on_one_device(
    train_dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap
) -> None:
    """In eval mode BatchNorm uses its running statistics, so chunks do not matter."""
    dp_run, single_run = compare_runs(
        ZOO["cnn_bn"],
        dtype=train_dtype,
        device=devices.primary,
        wrap=data_parallel,
        replicas=devices.count,
        steps=STEPS,
        optimizer=OPTIMIZERS["sgd_momentum"],
        train=False,
    )
    assert_runs_close(dp_run, single_run, device_kind=devices.kind)


# ------------------------------------------------------------ gradients


def _mlp_pair(
    dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(single-device MLP, identical MLP, that MLP wrapped by the implementation)."""
    spec = ZOO["mlp"]
    single = spec.make(dtype, devices.primary)
    inner = spec.make(dtype, devices.primary)
    return single, inner, data_parallel(inner)


def _mlp_batch(dtype: torch.dtype, devices: DeviceSet, seed: int = 1) -> torch.Tensor:
    (x,), _ = ZOO["mlp"].make_inputs(uneven_batch(devices.count), dtype, devices.primary, seed)
    return x


def test_replica_gradients_are_summed_not_averaged(
    precise_dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    """A summed loss has the same gradient however the batch is split."""
    single, inner, dp = _mlp_pair(precise_dtype, devices, data_parallel)
    x = _mlp_batch(precise_dtype, devices)
    dp(x).sum().backward()
    single(x).sum().backward()
    expected = dict(single.named_parameters())
    for name, param in inner.named_parameters():
        want = expected[name].grad
        ratio = (param.grad.norm() / want.norm()).item()
        try:
            assert_close(param.grad, want, device_kind=devices.kind, what=f"gradient of {name}")
        except AssertionError as err:
            raise AssertionError(
                f"gradient of {name} is {ratio:.4g} times the single-device gradient; replica "
                f"gradients must be summed ({1 / replica_count:.4g} = 1/{replica_count} "
                f"means they were averaged)"
            ) from err


def test_every_replicas_gradient_reaches_the_parameters(
    precise_dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    """A loss on one chunk's rows only is differentiated through that chunk's replica alone."""
    single, inner, dp = _mlp_pair(precise_dtype, devices, data_parallel)
    x = _mlp_batch(precise_dtype, devices)
    bounds = chunk_bounds(x.shape[0], replica_count)
    assert len(bounds) == replica_count, "the batch must give every replica a chunk"
    expected = dict(single.named_parameters())
    for replica, (start, length) in enumerate(bounds):
        inner.zero_grad(set_to_none=True)
        single.zero_grad(set_to_none=True)
        dp(x).narrow(0, start, length).square().sum().backward()
        single(x).narrow(0, start, length).square().sum().backward()
        for name, param in inner.named_parameters():
            what = f"gradient of {name} from replica {replica}'s rows {start}..{start + length - 1}"
            assert param.grad is not None, f"{what} is missing"
            assert param.grad.abs().sum() > 0, (
                f"{what} is zero: that replica's gradient did not reach the original parameter"
            )
            assert_close(param.grad, expected[name].grad, device_kind=devices.kind, what=what)


# ------------------------------------------------------------ replicas are fresh


def _sgd_step(model: nn.Module, output: torch.Tensor) -> None:
    output.square().mean().backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= 0.5 * param.grad
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("update", ["optimizer_step", "load_state_dict"])
def test_replicas_use_the_current_parameters_on_every_forward(
    update: str,
    precise_dtype: torch.dtype,
    devices: DeviceSet,
    data_parallel: Wrap,
    replica_count: int,
) -> None:
    """After the parameters change, the next forward of every replica sees the change.

    The same batch goes through both models at every step, so a replica built
    once and reused (stale weights) gives its rows of the first step again.
    """
    single, inner, dp = _mlp_pair(precise_dtype, devices, data_parallel)
    x = _mlp_batch(precise_dtype, devices)
    previous = None
    for step in range(STEPS):
        out, want = dp(x), single(x)
        assert_close(
            out.detach(),
            want.detach(),
            device_kind=devices.kind,
            what=f"output after {step} parameter update(s) ({update})",
        )
        assert previous is None or not torch.equal(want.detach(), previous), (
            "the update did not change the single-device output: the claim would be vacuous"
        )
        previous = want.detach().clone()
        if update == "optimizer_step":
            _sgd_step(inner, out)
            _sgd_step(single, want)
        else:
            new = ZOO["mlp"].make(precise_dtype, devices.primary, seed=100 + step).state_dict()
            inner.load_state_dict(new)
            single.load_state_dict(new)


# ------------------------------------------------------------ buffers and attributes


def test_batchnorm_running_stats_come_from_the_first_chunk_alone(
    precise_dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    spec = ZOO["cnn_bn"]
    inner = spec.make(precise_dtype, devices.primary).train()
    first_chunk_only = spec.make(precise_dtype, devices.primary).train()
    (x,), _ = spec.make_inputs(uneven_batch(replica_count), precise_dtype, devices.primary)
    data_parallel(inner)(x)
    start, length = chunk_bounds(x.shape[0], replica_count)[0]
    first_chunk_only(x.narrow(0, start, length))
    for name in ("running_mean", "running_var"):
        assert_close(
            getattr(inner.bn, name),
            getattr(first_chunk_only.bn, name),
            device_kind=devices.kind,
            what=f"bn.{name} after one data-parallel forward (expected: first chunk alone)",
        )
    tracked = int(inner.bn.num_batches_tracked)
    assert tracked == 1, (
        f"bn.num_batches_tracked is {tracked} after one forward; expected 1 "
        f"({replica_count} would mean every replica's update was kept)"
    )


def test_in_place_buffer_updates_survive_from_the_first_replica_only(
    precise_dtype: torch.dtype, devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    module = InPlaceBufferUpdates().to(device=devices.primary, dtype=precise_dtype)
    x = labelled((uneven_batch(replica_count), 4), dtype=precise_dtype, device=devices.primary)
    data_parallel(module)(x)
    calls = int(module.calls)
    assert calls == 1, (
        f"counter buffer incremented in forward is {calls} after one forward; expected 1, "
        f"from the first replica alone ({replica_count} replicas ran)"
    )
    start, length = chunk_bounds(x.shape[0], replica_count)[0]
    assert_close(
        module.seen,
        x.narrow(0, start, length).sum(),
        device_kind=devices.kind,
        what="buffer accumulating the input with add_ (expected: the first chunk's sum)",
    )


def test_attribute_writes_in_forward_are_lost(
    devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    x = torch.randn(uneven_batch(replica_count), 4, device=devices.primary)
    direct = AttributeWrites().to(devices.primary)
    direct(x)
    assert (direct.calls, direct.last_rows) == (1, x.shape[0]), "precondition: forward writes"

    module = AttributeWrites()
    data_parallel(module)(x)
    assert module.calls == 0, (
        f"module.calls is {module.calls} after a data-parallel forward: replicas must be "
        "shallow copies whose attribute writes are discarded"
    )
    assert not hasattr(module, "last_rows"), "an attribute set in a replica's forward leaked"


# ------------------------------------------------------------ exceptions


def _raise_on_poisoned_row(row: int) -> Callable[[Probe, tuple, dict], torch.Tensor]:
    def respond(probe: Probe, args: tuple, kwargs: dict) -> torch.Tensor:
        if row in labels(args[0]):
            raise ValueError(f"row {row} is poisoned")
        return args[0] * probe.gain

    return respond


@pytest.mark.parametrize("where", ["first_replica", "last_replica"])
def test_replica_exception_reaches_the_caller_with_type_message_and_replica(
    where: str, devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    """``torch.nn.DataParallel`` names the replica in the message, the reference in a note."""
    batch = uneven_batch(replica_count)
    bounds = chunk_bounds(batch, replica_count)
    replica = 0 if where == "first_replica" else len(bounds) - 1
    row = bounds[replica][0] + bounds[replica][1] - 1
    x = labelled((batch, 3), device=devices.primary)
    dp = data_parallel(Probe(respond=_raise_on_poisoned_row(row)))

    with pytest.raises(Exception) as caught:
        dp(x)
    error = caught.value
    assert type(error) is ValueError, (
        f"a ValueError raised in replica {replica} reached the caller as "
        f"{type(error).__name__}: {error}"
    )
    assert f"row {row} is poisoned" in str(error), f"original message lost: {error}"
    assert names_replica(error, replica), (
        f"the error does not name replica {replica} in its message or notes:\n"
        f"{replica_report(error)}"
    )


# ------------------------------------------------------------ grad mode and autocast


GRAD_MODES = {
    "grad_enabled": (torch.enable_grad, True),
    "no_grad": (torch.no_grad, False),
    "inference_mode": (torch.inference_mode, False),
}


@pytest.mark.parametrize("mode", list(GRAD_MODES))
def test_replicas_run_in_the_callers_grad_mode(
    mode: str, devices: DeviceSet, data_parallel: Wrap, replica_count: int
) -> None:
    context, enabled = GRAD_MODES[mode]
    dp = data_parallel(Probe(respond=report_grad_mode))
    x = torch.randn(uneven_batch(replica_count), 3, device=devices.primary)
    with context():
        seen = dp(x)
    rows = [bool(v) for v in seen.tolist()]
    assert rows == [enabled] * x.shape[0], (
        f"grad mode per row inside the replicas: {rows}; the caller's was {enabled} ({mode})"
    )


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_forward_without_grad_builds_no_graph(
    mode: str,
    precise_dtype: torch.dtype,
    devices: DeviceSet,
    data_parallel: Wrap,
    replica_count: int,
) -> None:
    context = GRAD_MODES[mode][0]
    single, _, dp = _mlp_pair(precise_dtype, devices, data_parallel)
    x = _mlp_batch(precise_dtype, devices)
    with context():
        out, want = dp(x), single(x)
    assert out.grad_fn is None, f"output under {mode} has a graph: grad_fn {out.grad_fn}"
    assert not out.requires_grad, f"output under {mode} requires grad"
    assert_close(out, want, device_kind=devices.kind, what=f"output under {mode}")


@pytest.mark.parametrize("which", ["default_dtype", "other_dtype"])
def test_autocast_is_carried_into_replicas(
    which: str,
    devices: DeviceSet,
    data_parallel: Wrap,
    replica_count: int,
    torch_limitation: Callable[[str], None],
) -> None:
    """Autocast in the device's default dtype (bfloat16 on CPU, float16 on CUDA) and in the
    other half-precision dtype.

    One linear layer, so the half-precision outputs differ by rounding at most.
    """
    default = torch.get_autocast_dtype(devices.kind)
    other = torch.float16 if default == torch.bfloat16 else torch.bfloat16
    dtype = default if which == "default_dtype" else other
    if which == "other_dtype":
        torch_limitation(
            "its replica threads re-enter autocast's on/off state but not its dtype, so they "
            f"compute in {default} under autocast({dtype})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        single = nn.Linear(16, 8).to(devices.primary)
    dp = data_parallel(copy.deepcopy(single))
    x = _mlp_batch(torch.float32, devices)
    with torch.autocast(devices.kind, dtype=dtype):
        out, want = dp(x), single(x)
    assert want.dtype == dtype, f"precondition: autocast gives {want.dtype} on one device"
    assert out.dtype == want.dtype, (
        f"output dtype under {devices.kind} autocast({dtype}) is {out.dtype}, one device "
        f"gives {want.dtype}: autocast was not carried into the replicas"
    )
    assert_close(out, want, device_kind=devices.kind, what=f"output under autocast({dtype})")


@pytest.mark.parametrize("inference", [True, False], ids=["inference_mode", "normal_mode"])
def test_replicas_run_in_the_callers_inference_mode(
    inference: bool,
    devices: DeviceSet,
    data_parallel: Wrap,
    replica_count: int,
    torch_limitation: Callable[[str], None],
) -> None:
    """Inference mode is thread-local: a replica outside it cannot update its input in place."""
    if inference:
        torch_limitation("its replica threads re-enter grad mode but not inference mode")
    dp = data_parallel(Probe(respond=report_inference_mode))
    x = torch.randn(uneven_batch(replica_count), 3, device=devices.primary)
    with torch.inference_mode(inference):
        seen = dp(x)
    rows = [bool(v) for v in seen.tolist()]
    assert rows == [inference] * x.shape[0], (
        f"inference mode per row inside the replicas: {rows}; the caller's was {inference}"
    )
