"""The training-loop patterns real code wraps around a data-parallel model, run alike on one
device and under data parallelism: checkpoints, mixed precision with a gradient scaler,
gradient accumulation, and runs repeated from one seed.

Like ``harness.training.run_steps``, each loop takes ``forward`` (the module, or the wrapper
under test around it) and ``module`` (the unwrapped module, whose parameters are trained and
read), so one loop serves the single-device reference, DataParallel and DDP.
"""

import math
import os
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.model_checks import leaves
from harness.tolerances import difference

Batch = tuple[tuple, dict]
LossFn = Callable[[Any], torch.Tensor]

# ---- checkpoints --------------------------------------------------------------------------

# What torch.nn.DataParallel and DistributedDataParallel put before the inner module's keys.
PREFIX = "module."


def prefix_problem(wrapped: nn.Module, inner: nn.Module) -> str | None:
    """Why ``wrapped.state_dict()`` is not ``inner``'s with ``module.`` before every key, or None.

    Checkpoints saved from torch's wrappers carry the prefix, and code that loads them strips
    it; an implementation that leaves it out (or adds entries of its own) breaks both ways.
    """
    got = list(wrapped.state_dict())
    want = [PREFIX + key for key in inner.state_dict()]
    if got == want:
        return None
    missing = [key for key in want if key not in got]
    extra = [key for key in got if key not in want]
    parts = [
        f"missing {_some(missing)}" if missing else "",
        f"extra {_some(extra)}" if extra else "",
    ]
    found = "; ".join(p for p in parts if p) or "the same keys in another order"
    return (
        f"the wrapped model's state_dict keys are not the inner module's with {PREFIX!r} before "
        f"each ({found}), as torch's DataParallel and DistributedDataParallel give them"
    )


def _some(keys: Sequence[str]) -> str:
    return ", ".join(keys[:3]) + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def checkpoint(module: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> dict:
    """What a training script saves: the unwrapped module's state and every optimizer's."""
    return {
        "model": module.state_dict(),
        "optimizers": [optimizer.state_dict() for optimizer in optimizers],
    }


def restore(state: dict, module: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Load a ``checkpoint`` into a module and freshly built optimizers (strictly)."""
    module.load_state_dict(state["model"])
    for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)


def optimizer_tensors(optimizers: Sequence[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
    """Every optimizer's state and numeric hyperparameters as named tensors, for comparing
    optimizers bitwise (across ranks, or before and after a checkpoint); copies, which later
    steps do not change."""
    found: dict[str, torch.Tensor] = {}
    for i, optimizer in enumerate(optimizers):
        state = optimizer.state_dict()
        for index, entries in sorted(state["state"].items()):
            for key, value in sorted(entries.items()):
                found[f"optimizer {i}, parameter {index}: {key}"] = torch.as_tensor(value).clone()
        for g, group in enumerate(state["param_groups"]):
            for key, value in sorted(group.items()):
                if key != "params" and isinstance(value, (int, float, tuple)) and value != ():
                    found[f"optimizer {i}, group {g}: {key}"] = torch.as_tensor(
                        value, dtype=torch.float64
                    )
    return found


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module.state_dict()`` (whose tensors are the live ones)."""
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def named_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the parameters, by name."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def named_gradients(module: nn.Module) -> dict[str, torch.Tensor | None]:
    """Detached copies of the parameters' gradients, by name (None where there is none)."""
    return {
        name: None if p.grad is None else p.grad.detach().clone()
        for name, p in module.named_parameters()
    }


# cuBLAS is deterministic only with a fixed workspace, set before CUDA starts.
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def determinism_unavailable(device_type: str) -> str | None:
    """Why runs on this device kind cannot be held to bitwise equality, or None."""
    if device_type == "cuda" and not os.environ.get(CUBLAS_WORKSPACE):
        return (
            f"bitwise determinism on CUDA needs {CUBLAS_WORKSPACE}=:4096:8 in the environment "
            "before the run (cuBLAS picks its workspaces otherwise)"
        )
    return None


@contextmanager
def deterministic_algorithms(device_type: str) -> Iterator[None]:
    """CPU kernels are deterministic as they are; on CUDA, torch's deterministic algorithms
    (an operation without one raises, naming itself)."""
    if device_type != "cuda":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def bitwise_problem(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], *, what: str
) -> str | None:
    """The first tensor that is not bitwise the same in two runs, and how it differs."""
    for name, tensor in first.items():
        if not torch.equal(tensor, second[name]):
            return f"{what}: {name} differs ({difference(second[name], tensor)})"
    return None


# ---- mixed precision ----------------------------------------------------------------------

# Small enough that no natural overflow happens in float32; growing after every good step, so
# that growth and backoff both show in a few steps.
SCALER_OPTIONS = {"init_scale": 2.0**8, "growth_factor": 2.0, "backoff_factor": 0.5}
GROWTH_INTERVAL = 1


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, growth_interval=GROWTH_INTERVAL, **SCALER_OPTIONS)


class Poison:
    """Backward hooks that make the last row of an output's gradient infinite: an overflow in
    the rows of one replica (the last chunk) or one rank (the one that poisons).

    ``fired`` counts the gradients poisoned, so a claim can check that the inf got in.
    """

    def __init__(self) -> None:
        self.fired = 0

    def attach(self, output: Any) -> None:
        for _, leaf in leaves(output):
            if isinstance(leaf, torch.Tensor) and leaf.requires_grad and leaf.dim() > 0:
                leaf.register_hook(self._poison)

    def _poison(self, grad: torch.Tensor) -> torch.Tensor:
        self.fired += 1
        grad = grad.clone()
        grad[-1] = math.inf
        return grad


@dataclass(frozen=True)
class ScaledStep:
    """One step of a loop with a gradient scaler, after its ``update()``."""

    scale: float
    skipped: bool  # the scaler found an inf or NaN and did not step the optimizer
    params: dict[str, torch.Tensor]


def scaled_steps(
    forward: Callable[..., Any],
    module: nn.Module,
    batches: Sequence[Batch],
    loss: LossFn,
    optimizer: Any,
    scaler: torch.amp.GradScaler | None,
    *,
    poisoned: Container[int] = (),
    poison: Poison | None = None,
) -> list[ScaledStep]:
    """The ``torch.amp.GradScaler`` recipe, one step per batch: ``scaler.scale(loss).backward()``,
    ``scaler.step(optimizer)``, ``scaler.update()``. The steps in ``poisoned`` get an inf in
    their gradient (``Poison``). A scaler backs off exactly when it skips a step, so a step is
    skipped where the scale went down. Without a scaler (the broken pattern) the optimizer steps
    on whatever gradient it got; the scale is then 1.
    """
    poison = poison if poison is not None else Poison()
    records = []
    for step, (args, kwargs) in enumerate(batches):
        module.zero_grad(set_to_none=True)
        output = forward(*args, **kwargs)
        if step in poisoned:
            poison.attach(output)
        value = loss(output)
        if scaler is None:
            value.backward()
            optimizer.step()
            records.append(ScaledStep(1.0, False, named_parameters(module)))
            continue
        before = scaler.get_scale()
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        after = scaler.get_scale()
        records.append(ScaledStep(after, after < before, named_parameters(module)))
    return records


def skipped_steps(records: Sequence[ScaledStep]) -> list[int]:
    return [step for step, record in enumerate(records) if record.skipped]


def scales(records: Sequence[ScaledStep]) -> list[float]:
    return [record.scale for record in records]


def non_finite(params: dict[str, torch.Tensor]) -> list[str]:
    """The parameters holding an inf or NaN."""
    return [name for name, p in params.items() if not bool(torch.isfinite(p).all())]


# ---- gradient accumulation ----------------------------------------------------------------


def accumulate(
    forward: Callable[..., Any],
    module: nn.Module,
    micro_batches: Sequence[Batch],
    loss: LossFn,
    *,
    divide: bool = True,
    quiet: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, torch.Tensor | None]:
    """Gradients accumulated over micro-batches, each loss divided by their number (unless
    ``divide`` is off: the broken pattern); every micro-batch but the last runs inside
    ``quiet()`` (DDP's ``no_sync``). Gradients are cleared first; the optimizer is not stepped.
    """
    module.zero_grad(set_to_none=True)
    count = len(micro_batches)
    for i, (args, kwargs) in enumerate(micro_batches):
        with quiet() if i < count - 1 else nullcontext():
            value = loss(forward(*args, **kwargs))
            (value / count if divide else value).backward()
    return named_gradients(module)


def in_precision_of(
    loss: torch.Tensor, *named: dict[str, torch.Tensor | None]
) -> tuple[dict[str, torch.Tensor | None], ...]:
    """Named tensors cast to the dtype of ``loss`` where that is less precise than theirs.

    A loss computed in float32 (as many are, for stability) rounds the gradients of a float64
    model there: dividing it by N rounds differently from a mean over N times the rows.
    """
    return tuple(
        {
            k: v if v is None or v.dtype.itemsize <= loss.dtype.itemsize else v.to(loss.dtype)
            for k, v in tensors.items()
        }
        for tensors in named
    )


def gradient_ratio(got: torch.Tensor, want: torch.Tensor) -> float:
    """``|got| / |want|``: N for an accumulation that forgot to divide by N micro-batches."""
    want_norm = _dense(want).double().norm().item()
    return _dense(got).double().norm().item() / want_norm if want_norm else math.nan


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_dense() if tensor.is_sparse else tensor
