"""Comparing a DDP run with the single-process run it stands for.

Runs are ``harness.training.run_steps`` records: the DDP side fed this rank's shards,
the single-process side the full batches. Messages name the rank, the step and the
parameter, and, for gradients, how many times larger the DDP gradient is than the
full-batch one, which tells a sum (the world size) or a local gradient apart from noise.
"""

from collections.abc import Container, Sequence

import torch

from harness.tolerances import assert_close
from harness.training import OptimizerRecipe, StepRecord


class PlainSGD:
    """SGD with momentum, as ``torch.optim.SGD(lr=..., momentum=...)`` computes it.

    ``buf = grad`` on the first step, ``buf = momentum * buf + grad`` after, then
    ``param -= lr * buf``; parameters without a gradient are left alone. Not
    ``torch.optim``: constructing any torch optimizer imports ``torch._dynamo``, about
    1.2 s in every fresh rank process on a 2-core machine (longer than all of the DDP
    training claims together, and paid again after every pool rebuild). Both sides of a
    comparison use this same optimizer, so the claims do not depend on its details.
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9) -> None:
        self.params = list(params)
        # What torch.amp.GradScaler reads to unscale the gradients this optimizer steps on.
        self.param_groups = [{"params": self.params}]
        self.lr = lr
        self.momentum = momentum
        self._buffers: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        for param in self.params:
            if param.grad is None:
                continue
            grad = param.grad
            if self.momentum:
                buf = self._buffers.get(id(param))
                if buf is None:
                    buf = self._buffers[id(param)] = grad.clone()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            param.add_(grad, alpha=-self.lr)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None


def sgd(module: torch.nn.Module, momentum: float = 0.9) -> PlainSGD:
    """``PlainSGD`` over ``module``'s parameters, learning rate 0.1."""
    return PlainSGD(module.parameters(), lr=0.1, momentum=momentum)


def _sgd_momentum(module: torch.nn.Module) -> list[PlainSGD]:
    return [sgd(module)]


# SGD with momentum, for ``harness.training.run_steps``.
SGD_MOMENTUM = OptimizerRecipe("sgd_momentum", _sgd_momentum)


def assert_gradients_match(
    actual: Sequence[StepRecord],
    expected: Sequence[StepRecord],
    *,
    rank: int,
    world_size: int,
    device_kind: str,
    skip: Container[str] = (),
) -> None:
    """Every step's gradients equal the single-process ones (names in ``skip`` excepted)."""
    assert len(actual) == len(expected), f"{len(actual)} steps recorded, expected {len(expected)}"
    for step, (got, want) in enumerate(zip(actual, expected)):
        for name, grad in want.grads.items():
            if name in skip:
                continue
            what = f"rank {rank}, step {step}: gradient of {name}"
            assert got.grads[name] is not None, f"{what}: no gradient under DDP"
            try:
                assert_close(got.grads[name], grad, device_kind=device_kind, what=what)
            except AssertionError as err:
                raise AssertionError(
                    f"{err}\n{_ratio(got.grads[name], grad)} (world size {world_size}: "
                    f"{world_size} would mean summed, not averaged)"
                ) from None


def assert_parameters_match(
    actual: Sequence[StepRecord],
    expected: Sequence[StepRecord],
    *,
    rank: int,
    device_kind: str,
) -> None:
    """Parameters after every optimizer step equal the single-process ones."""
    for step, (got, want) in enumerate(zip(actual, expected)):
        for name, param in want.params.items():
            assert_close(
                got.params[name],
                param,
                device_kind=device_kind,
                what=f"rank {rank}, after step {step}: parameter {name}",
            )


def _ratio(got: torch.Tensor, want: torch.Tensor) -> str:
    want_norm = want.double().norm().item()
    if want_norm == 0:
        return "the full-batch gradient is zero"
    ratio = got.double().norm().item() / want_norm
    return f"its norm is {ratio:.4g} times the full-batch gradient's"
