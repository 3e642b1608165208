"""Running the same training steps on one device and under data parallelism.

A suite builds two identical models (same seed), wraps one with the
implementation under test, feeds both the same batches through
``run_steps`` and compares the records step by step with
``assert_runs_close``; ``compare_runs`` does the first part for a zoo model.
Each step records the output, the loss, every parameter's gradient (sparse
gradients stay sparse) and every parameter after the optimizer step, all
detached copies, so a later step cannot change an earlier record.

Optimizers come as ``OptimizerRecipe``: a name for test ids and a builder that
may return several optimizers, because sparse gradients need their own
(``torch.optim.Adam`` refuses them; ``SparseAdam`` takes nothing else).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.model_checks import dropout_off, gather_problem
from harness.model_specs import traits
from harness.models import ModelSpec
from harness.probes.expect import chunk_bounds, expected_split, tensors_in
from harness.tolerances import assert_close

Batch = tuple[tuple, dict]
LossFn = Callable[[Any], torch.Tensor]


def uneven_batch(replicas: int) -> int:
    """A batch size that uses every replica and leaves the last chunk one row short.

    ``3 * replicas - 1`` rows split as ``torch.chunk`` does: chunks of 3, the
    last of 2 (11 rows on 4 replicas: 3, 3, 3, 2). Every chunk has at least two
    rows, which BatchNorm in training mode needs.
    """
    return 3 * replicas - 1


def sum_of_squares(output: Any) -> torch.Tensor:
    """A scalar loss touching every floating-point leaf of a (nested) output."""
    if isinstance(output, torch.Tensor):
        # At least float32 (half-precision outputs under autocast), else the output's own dtype.
        return output.to(torch.promote_types(output.dtype, torch.float32)).square().mean()
    values = output.values() if isinstance(output, dict) else output
    return sum(sum_of_squares(v) for v in values)


def dtypes_for(device_kind: str) -> tuple[torch.dtype, ...]:
    """Floating-point dtypes the synchronisation claims are checked in.

    float64 on the CPU separates summation-order noise from real faults by
    many orders of magnitude; GPUs are checked in float32. Not bfloat16:
    compared element by element over several optimizer steps, its rounding
    (and Adam's normalisation of it) would be measured, not synchronisation.
    """
    return (torch.float64, torch.float32) if device_kind == "cpu" else (torch.float32,)


def sparse_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that receive sparse gradients (embeddings built with ``sparse=True``)."""
    return [
        param
        for m in module.modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse
        for param in m.parameters(recurse=False)
    ]


def _split_dense_sparse(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    sparse = sparse_parameters(module)
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in module.parameters() if id(p) not in sparse_ids]
    return dense, sparse


def _sgd_momentum(module: nn.Module) -> list[torch.optim.Optimizer]:
    # SGD with momentum accepts sparse gradients.
    return [torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)]


# Adam divides each gradient element by its own running magnitude, so where
# the true gradient is zero (a bias before BatchNorm, attention key biases)
# it turns rounding noise (about 1e-9 in float32) into full-size steps that
# no two correct summation orders agree on. An ``eps`` well above that noise
# and well below real gradients (1e-3 to 1e-1 in the zoo) keeps such elements
# still while every other element is still normalised.
ADAM_EPS = 1e-4


def _adam(module: nn.Module) -> list[torch.optim.Optimizer]:
    dense, sparse = _split_dense_sparse(module)
    optimizers: list[torch.optim.Optimizer] = []
    if dense:
        optimizers.append(torch.optim.Adam(dense, lr=1e-2, eps=ADAM_EPS))
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=1e-2, eps=ADAM_EPS))
    return optimizers


@dataclass(frozen=True)
class OptimizerRecipe:
    """How to build the optimizer(s) for a module; ``name`` is used in test ids."""

    name: str
    build: Callable[[nn.Module], list[torch.optim.Optimizer]]


OPTIMIZERS: dict[str, OptimizerRecipe] = {
    recipe.name: recipe
    for recipe in [
        OptimizerRecipe("sgd_momentum", _sgd_momentum),
        # Adam for dense gradients, SparseAdam for sparse embeddings.
        OptimizerRecipe("adam", _adam),
    ]
}


@dataclass(frozen=True)
class StepRecord:
    """What one training step produced; every tensor is a detached copy."""

    output: Any
    loss: torch.Tensor
    grads: dict[str, torch.Tensor | None]
    # Parameters after the optimizer step (before it when no optimizer is given).
    params: dict[str, torch.Tensor]


def snapshot(obj: Any) -> Any:
    """A detached copy of a (nested) result, keeping container types."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return type(obj)((k, snapshot(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*map(snapshot, obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map(snapshot, obj))
    return obj


def run_steps(
    forward: Callable[..., Any],
    module: nn.Module,
    batches: Sequence[Batch],
    loss: LossFn,
    optimizer: OptimizerRecipe | None = None,
) -> list[StepRecord]:
    """One step per batch: ``forward(*args, **kwargs)``, ``loss``, backward, optimizer step.

    ``forward`` is the module itself or a wrapper around it; ``module`` is the
    unwrapped module, whose parameters are optimised and recorded by their
    names in it (so a wrapper's ``module.`` prefix does not matter).
    Gradients are cleared before every step; the optimizers are built from ``optimizer``.
    """
    optimizers = optimizer.build(module) if optimizer is not None else []
    return train_steps(forward, module, batches, loss, optimizers)


def train_steps(
    forward: Callable[..., Any],
    module: nn.Module,
    batches: Sequence[Batch],
    loss: LossFn,
    optimizers: Sequence[Any],
) -> list[StepRecord]:
    """``run_steps`` with optimizers already built, so that a run can go on where another left
    off (after a checkpoint)."""
    records = []
    for args, kwargs in batches:
        module.zero_grad(set_to_none=True)
        output = forward(*args, **kwargs)
        value = loss(output)
        value.backward()
        grads = {
            name: None if p.grad is None else p.grad.detach().clone()
            for name, p in module.named_parameters()
        }
        for opt in optimizers:
            opt.step()
        params = {name: p.detach().clone() for name, p in module.named_parameters()}
        records.append(StepRecord(snapshot(output), value.detach().clone(), grads, params))
    return records


def assert_runs_close(
    actual: Sequence[StepRecord],
    expected: Sequence[StepRecord],
    *,
    device_kind: str,
    compare_params: bool = True,
) -> None:
    """Step by step: outputs, losses, gradients (and their layout), parameters.

    ``expected`` is the single-device run; failure messages name the step and
    the quantity, e.g. "step 2: gradient of net.0.weight".
    """
    assert len(actual) == len(expected), f"{len(actual)} steps recorded, expected {len(expected)}"
    for step, (got, want) in enumerate(zip(actual, expected)):
        where = f"step {step}"
        assert_close(got.output, want.output, device_kind=device_kind, what=f"{where}: output")
        assert_close(got.loss, want.loss, device_kind=device_kind, what=f"{where}: loss")
        assert list(got.grads) == list(want.grads), f"{where}: parameter names differ"
        for name, grad in want.grads.items():
            what = f"{where}: gradient of {name}"
            if grad is None:
                assert got.grads[name] is None, f"{what}: got a gradient, single device had none"
                continue
            assert got.grads[name] is not None, (
                f"{what}: no gradient reached the original parameter under data parallelism"
            )
            assert got.grads[name].layout == grad.layout, (
                f"{what}: layout {got.grads[name].layout}, single device gave {grad.layout}"
            )
            assert_close(got.grads[name], grad, device_kind=device_kind, what=what)
        if compare_params:
            for name, param in want.params.items():
                assert_close(
                    got.params[name],
                    param,
                    device_kind=device_kind,
                    what=f"{where}: parameter {name} after the optimizer step",
                )


def per_chunk(module: nn.Module, chunks: int, dim: int = 0) -> Callable[..., Any]:
    """``module`` applied to each ``torch.chunk`` of its inputs, outputs concatenated.

    The single-device equivalent of data parallelism for a batch-dependent module (BatchNorm
    in training mode normalises each replica's chunk by that chunk's own statistics): every
    tensor argument is cut into the chunks ``torch.chunk`` gives, each chunk's call is made in
    turn, and the outputs are joined along ``dim``. Outputs and gradients match data
    parallelism; running statistics do not, because every chunk here updates them.
    """

    def forward(*args: Any, **kwargs: Any) -> Any:
        first = next(t for t in tensors_in((args, kwargs)))
        outputs = [
            module(
                *expected_split(args, start, length, dim),
                **expected_split(kwargs, start, length, dim),
            )
            for start, length in chunk_bounds(first.size(dim), chunks)
        ]
        return concatenate(outputs, dim)

    return forward


def concatenate(outputs: Sequence[Any], dim: int = 0) -> Any:
    """Per-chunk outputs joined as one: tensors concatenated along ``dim``, containers kept."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(outputs), dim)
    if isinstance(first, dict):
        return type(first)((k, concatenate([o[k] for o in outputs], dim)) for k in first)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(concatenate(parts, dim) for parts in zip(*outputs, strict=True)))
    if isinstance(first, (list, tuple)):
        return type(first)(concatenate(parts, dim) for parts in zip(*outputs, strict=True))
    return first


def comparable(spec: ModelSpec, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """The spec's model as the equivalence claims compare it: built from ``seed``, with its
    dropout layers at probability 0 (two runs cannot draw the same random masks, so a model
    with dropout is compared as the same model without it; ``traits(spec).dropout`` names the
    layers, and the verdict says so)."""
    model = spec.make(dtype, device, seed)
    dropout_off(model)
    return model


def assert_gatherable(output: Any) -> None:
    """Fail, naming the output and the remedy, when data parallelism cannot gather it."""
    problem = gather_problem(output)
    if problem is not None:
        raise AssertionError(problem)


def single_device_forward(
    spec: ModelSpec, module: nn.Module, replicas: int, train: bool = True
) -> Callable[..., Any]:
    """What data parallelism over ``replicas`` computes, on one device: the module itself, or
    for a batch-dependent model in training mode (BatchNorm) the module chunk by chunk
    (``per_chunk``)."""
    if train and traits(spec).batch_dependent:
        return per_chunk(module, replicas)
    return module


def compare_runs(
    spec: ModelSpec,
    *,
    dtype: torch.dtype,
    device: torch.device,
    wrap: Callable[[nn.Module], nn.Module],
    replicas: int,
    steps: int,
    optimizer: OptimizerRecipe | None = None,
    train: bool = True,
) -> tuple[list[StepRecord], list[StepRecord]]:
    """``(data-parallel run, single-device run)`` of one model.

    Two copies built from the same seed (``comparable``), one wrapped by ``wrap`` (the
    implementation under test), take the same ``steps`` batches of ``uneven_batch(replicas)``
    rows. In training mode a batch-dependent model (BatchNorm) runs on the single device chunk
    by chunk (``per_chunk``), the computation data parallelism performs; in eval mode it runs on
    the whole batch like every other model. The single-device run goes first: an output data
    parallelism cannot gather fails there, naming it and the remedy.
    """
    single = comparable(spec, dtype, device).train(train)
    inner = comparable(spec, dtype, device).train(train)
    batches = [
        spec.make_inputs(uneven_batch(replicas), dtype, device, seed=1 + step)
        for step in range(steps)
    ]
    reference = single_device_forward(spec, single, replicas, train)
    single_run = run_steps(reference, single, batches, spec.loss, optimizer)
    assert_gatherable(single_run[0].output)
    return run_steps(wrap(inner), inner, batches, spec.loss, optimizer), single_run
