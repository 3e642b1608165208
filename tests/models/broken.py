"""User models that data parallelism cannot serve as written, for the claims that must say why.

- ``stateful``: its forward counts calls and remembers the last batch size in Python
  attributes, which replicas lose;
- ``dataclass_output``: returns a dataclass, which DataParallel cannot gather;
- ``random_forward``: draws noise in its forward outside any dropout layer.
"""

from dataclasses import dataclass

import torch
from torch import nn

from harness.models import ModelSpec


class Stateful(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_rows = x.shape[0]
        return self.linear(x)


@dataclass
class Prediction:
    scores: torch.Tensor


class DataclassOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> Prediction:
        return Prediction(self.linear(x))


class RandomForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x) * 0.1 if self.training else 0.0
        return self.linear(x + noise)


def _rows(batch: int, dtype: torch.dtype, generator: torch.Generator):
    return (torch.randn(batch, 6, generator=generator).to(dtype),), {}


def _scores(outputs) -> torch.Tensor:
    return outputs.square().mean()


stateful = ModelSpec("stateful", Stateful, _rows, loss=_scores)
dataclass_output = ModelSpec(
    "dataclass_output", DataclassOutput, _rows, loss=lambda out: out.scores.square().mean()
)
random_forward = ModelSpec("random_forward", RandomForward, _rows, loss=_scores)
