"""A small zoo of models covering the layer kinds data parallelism treats specially.

Each entry builds a deterministic model and inputs for a batch size, so a
suite can run the same step on one device and under data parallelism and
compare. Inputs are random normals, never zeros or ranges that would hide
a mix-up of rows.

``ZOO`` holds them tiny (widths 8-32), for correctness checks that run on CPUs in
seconds. ``MEMORY_ZOO`` holds the same kinds at realistic sizes, for the memory
checks: a tiny model's largest batch is limited by CUDA's launch limits, not by
memory (see ``harness.memory.estimate``).
"""

from collections import namedtuple
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

Pair = namedtuple("Pair", ["mean", "scale"])


class MLP(nn.Module):
    def __init__(self, width: int = 16, hidden: int = 32, out: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvBN(nn.Module):
    def __init__(self, channels: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(x.mean(dim=(2, 3)))


class Recurrent(nn.Module):
    """An LSTM or GRU over a batch-first sequence, classifying its last step."""

    def __init__(
        self,
        cell: type[nn.RNNBase],
        bidirectional: bool = False,
        features: int = 8,
        hidden: int = 12,
        classes: int = 4,
    ) -> None:
        super().__init__()
        self.rnn = cell(
            features, hidden, num_layers=2, batch_first=True, bidirectional=bidirectional
        )
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Replicas' weights are not one contiguous block; without this cuDNN
        # warns and copies them on every call.
        self.rnn.flatten_parameters()
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Encoder(nn.Module):
    def __init__(
        self, d_model: int = 16, nhead: int = 4, feedforward: int = 32, classes: int = 4
    ) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=feedforward,
            dropout=0.0,
            batch_first=True,
        )
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.layer(x, src_key_padding_mask=mask).mean(dim=1))


class SparseEmbedding(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, sparse=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens).mean(dim=1))


class NestedOutputs(nn.Module):
    """Takes a dict and returns a dict holding a tensor and a namedtuple."""

    def __init__(self, features: int = 6, hidden: int = 8, out: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(features, hidden)
        self.mean = nn.Linear(hidden, out)
        self.scale = nn.Linear(hidden, out)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        h = torch.tanh(self.body(batch["features"]) * batch["weight"])
        return {"hidden": h, "stats": Pair(self.mean(h), nn.functional.softplus(self.scale(h)))}


def _normal(*shape: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype)


# Each takes the batch, dtype and generator, then keywords for the shape of one sample; the
# defaults are the tiny zoo's. ``tokens`` adds a sequence dimension (the realistic zoo's MLPs
# act on every token of a sequence, as a transformer's do).


def _mlp_inputs(
    batch: int,
    dtype: torch.dtype,
    gen: torch.Generator,
    *,
    tokens: tuple[int, ...] = (),
    width: int = 16,
) -> tuple[tuple, dict]:
    return (_normal(batch, *tokens, width, dtype=dtype, gen=gen),), {}


def _image_inputs(
    batch: int, dtype: torch.dtype, gen: torch.Generator, *, side: int = 6
) -> tuple[tuple, dict]:
    return (_normal(batch, 3, side, side, dtype=dtype, gen=gen),), {}


def _sequence_inputs(
    batch: int, dtype: torch.dtype, gen: torch.Generator, *, steps: int = 5, features: int = 8
) -> tuple[tuple, dict]:
    return (_normal(batch, steps, features, dtype=dtype, gen=gen),), {}


def _encoder_inputs(
    batch: int, dtype: torch.dtype, gen: torch.Generator, *, tokens: int = 6, d_model: int = 16
) -> tuple[tuple, dict]:
    mask = torch.zeros(batch, tokens, dtype=torch.bool)
    mask[:, -1] = torch.rand(batch, generator=gen) < 0.5
    return (_normal(batch, tokens, d_model, dtype=dtype, gen=gen),), {"mask": mask}


def _token_inputs(
    batch: int, dtype: torch.dtype, gen: torch.Generator, *, vocab: int = 50, tokens: int = 5
) -> tuple[tuple, dict]:
    return (torch.randint(0, vocab, (batch, tokens), generator=gen),), {}


def _dict_inputs(
    batch: int,
    dtype: torch.dtype,
    gen: torch.Generator,
    *,
    tokens: tuple[int, ...] = (),
    features: int = 6,
) -> tuple[tuple, dict]:
    features_ = _normal(batch, *tokens, features, dtype=dtype, gen=gen)
    weight = _normal(batch, *[1 for _ in tokens], 1, dtype=dtype, gen=gen).abs() + 0.5
    return ({"features": features_, "weight": weight},), {}


def _sum_of_squares(output: Any) -> torch.Tensor:
    """A scalar loss that touches every floating-point leaf of the output."""
    if isinstance(output, torch.Tensor):
        return output.float().square().mean()
    values = output.values() if isinstance(output, dict) else output
    return sum(_sum_of_squares(v) for v in values)


@dataclass(frozen=True)
class ModelSpec:
    """A model the suites can run: how to build it, its inputs, and its loss.

    - ``name``: for test ids and reports;
    - ``build()``: a fresh ``nn.Module`` on the CPU; called under a fixed seed, so two builds
      have the same parameters;
    - ``inputs(batch, dtype, generator)``: ``(args, kwargs)`` for ``batch`` rows, drawn from
      ``generator``; floating-point tensors in ``dtype``, integer ones (token ids) as they are;
      every tensor's dimension 0 is the batch;
    - ``loss(outputs)``: a scalar that is a mean over the batch's rows (so equal shards
      average to the full batch's), touching every output that takes part in training.

    The flags say what the claims must allow for; None (the default) means found from the
    built model (``harness.model_specs.traits``):

    - ``batch_dependent``: outputs depend on the whole batch (BatchNorm in training mode
      normalises each chunk by its own statistics);
    - ``sparse_grads``: some parameter gets sparse gradients (``nn.Embedding(sparse=True)``);
    - ``recurrent``: the model holds RNN layers (the RNN caveats apply).
    """

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, torch.dtype, torch.Generator], tuple[tuple, dict]]
    batch_dependent: bool | None = None
    sparse_grads: bool | None = None
    recurrent: bool | None = None
    loss: Callable[[Any], torch.Tensor] = field(default=_sum_of_squares)

    def make(self, dtype: torch.dtype, device: torch.device, seed: int = 0) -> nn.Module:
        if torch.device(device).type == "meta":
            # Shapes only: no values to initialise, so a realistic model costs nothing.
            with torch.device("meta"):
                return self.build().to(dtype=dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.build()
        return model.to(device=device, dtype=dtype)

    def make_inputs(
        self, batch: int, dtype: torch.dtype, device: torch.device, seed: int = 1
    ) -> tuple[tuple, dict]:
        gen = torch.Generator().manual_seed(seed)
        args, kwargs = self.inputs(batch, dtype, gen)
        return _to(args, device), _to(kwargs, device)


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, _to(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("mlp", MLP, _mlp_inputs),
        ModelSpec("cnn_bn", ConvBN, _image_inputs, batch_dependent=True),
        ModelSpec("lstm", lambda: Recurrent(nn.LSTM), _sequence_inputs, recurrent=True),
        ModelSpec("gru", lambda: Recurrent(nn.GRU, True), _sequence_inputs, recurrent=True),
        ModelSpec("transformer", Encoder, _encoder_inputs),
        ModelSpec("sparse_embedding", SparseEmbedding, _token_inputs, sparse_grads=True),
        ModelSpec("nested_outputs", NestedOutputs, _dict_inputs),
    ]
}


# The same kinds at the sizes of real models, for the memory checks: in float32 under a 24 GiB
# cap each one's largest training batch is in the hundreds to thousands (estimated on the meta
# device in tests/unit/test_memory_estimate.py), far below the search's ceiling of 65535.
MEMORY_ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        # A transformer-sized feed-forward block (GPT-style 4x widening) over 128 tokens.
        ModelSpec(
            "mlp",
            partial(MLP, 4096, 16384, 4096),
            partial(_mlp_inputs, tokens=(128,), width=4096),
        ),
        # VGG's first layer: 64 channels of 3x3 convolutions over 224x224 images.
        ModelSpec(
            "cnn_bn",
            partial(ConvBN, channels=64, classes=1000),
            partial(_image_inputs, side=224),
            batch_dependent=True,
        ),
        ModelSpec(
            "lstm",
            partial(Recurrent, nn.LSTM, features=1024, hidden=1024),
            partial(_sequence_inputs, steps=256, features=1024),
            recurrent=True,
        ),
        ModelSpec(
            "gru",
            partial(Recurrent, nn.GRU, True, features=1024, hidden=1024),
            partial(_sequence_inputs, steps=256, features=1024),
            recurrent=True,
        ),
        # A BERT-large encoder layer over 512 tokens.
        ModelSpec(
            "transformer",
            partial(Encoder, d_model=1024, nhead=16, feedforward=4096),
            partial(_encoder_inputs, tokens=512, d_model=1024),
        ),
        ModelSpec(
            "sparse_embedding",
            partial(SparseEmbedding, vocab=50_000, dim=1024),
            partial(_token_inputs, vocab=50_000, tokens=2048),
            sparse_grads=True,
        ),
        ModelSpec(
            "nested_outputs",
            partial(NestedOutputs, features=4096, hidden=4096, out=1024),
            partial(_dict_inputs, tokens=(128,), features=4096),
        ),
    ]
}
