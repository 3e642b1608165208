"""Modules whose forward has side effects, and probe responses that report a replica's modes:
for the claims about what survives a data-parallel forward (buffer updates, attribute writes,
grad and inference mode inside replicas).
"""

import torch
from torch import nn


class InPlaceBufferUpdates(nn.Module):
    """A linear layer that updates two buffers in place on every forward.

    ``calls`` counts forwards (``+= 1``) and ``seen`` adds up every input
    element (``add_``), the pattern of BatchNorm's running statistics. Under
    DataParallel only the first replica's buffers are the module's own, so
    afterwards ``calls`` is 1 and ``seen`` the first chunk's sum.
    """

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.seen.add_(x.detach().sum().to(self.seen.dtype))
        return self.linear(x)


class AttributeWrites(nn.Module):
    """A linear layer that rebinds Python attributes in forward.

    ``calls`` is incremented and ``last_rows`` set to the batch size. Replicas
    are shallow copies, so under DataParallel these writes land on the replica
    and are lost with it; the wrapped module keeps ``calls == 0`` and never
    gets ``last_rows``.
    """

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(width, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_rows = x.shape[0]
        return self.linear(x)


def report_grad_mode(probe: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """A ``Probe`` response: one row per input row, 1.0 where grad mode was on.

    Gathered, it shows the grad mode every replica ran in.
    """
    x = args[0]
    return torch.full((x.shape[0],), float(torch.is_grad_enabled()), device=x.device)


def report_inference_mode(probe: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """A ``Probe`` response: one row per input row, 1.0 where inference mode was on."""
    x = args[0]
    on = torch.is_inference_mode_enabled()
    return torch.full((x.shape[0],), float(on), device=x.device)
