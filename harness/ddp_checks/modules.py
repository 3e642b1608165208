"""Small modules whose behaviour under DDP a claim observes.

Each has at least one parameter that takes part in the loss, because a DDP wrapper needs
a parameter to synchronise.
"""

import torch
from torch import nn


def randomise_state(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter and buffer with values drawn from ``seed`` (in place).

    Some state is not random at construction (BatchNorm's weight is ones, its running
    mean zeros), so a model built from a rank-dependent seed alone still agrees across
    ranks there. Floating-point tensors get normals (positive ones for running variances,
    so the module still works); integer buffers (``num_batches_tracked``) random counts.
    Returns ``module``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in [*module.named_parameters(), *module.named_buffers()]:
            if buffer.dtype.is_floating_point:
                values = torch.randn(buffer.shape, generator=gen, dtype=torch.float64)
                if name.endswith("running_var"):
                    values = values.abs() + 0.5
            else:
                values = torch.randint(1, 1000, buffer.shape, generator=gen)
            buffer.copy_(values.to(buffer.dtype))
    return module


class StepBuffer(nn.Module):
    """Returns the buffer ``total`` as it stood when forward began, then adds ``step`` to it.

    Built with a rank-dependent ``step``, each rank's own updates drift apart; what a
    forward reports shows whose buffer it started from. Output: ``(linear(x), total)``.
    """

    def __init__(self, step: float, width: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 2)
        self.register_buffer("total", torch.zeros((), dtype=torch.float64))
        self.step = step

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen = self.total.clone()
        self.total += self.step
        return self.linear(x), seen


class PartlyUsed(nn.Module):
    """Two linear layers of which forward uses only ``used``; ``unused`` gets no gradient."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.used = nn.Linear(width, 4)
        self.unused = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


class NormNet(nn.Module):
    """A linear layer followed by ``BatchNorm1d``: running statistics from every batch."""

    def __init__(self, width: int = 16, features: int = 6) -> None:
        super().__init__()
        self.linear = nn.Linear(width, features)
        self.norm = nn.BatchNorm1d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


def build(cls: type[nn.Module], seed: int, dtype: torch.dtype, device: torch.device, **kwargs):
    """``cls(**kwargs)``, its initial parameters drawn from ``seed``, in ``dtype`` on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = cls(**kwargs)
    return module.to(device=device, dtype=dtype)
