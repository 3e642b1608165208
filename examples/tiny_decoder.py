"""A small decoder-only transformer with tied embeddings, as a user would write it for the
harness.

    pytest suites/dp suites/ddp --model examples.tiny_decoder:spec

Token ids go in as integers; the output head shares its weight with the token embedding (one
parameter, one summed gradient); dropout is on, so the harness compares it with dropout off.
"""

import torch
from torch import nn
from torch.nn import functional as F

from harness.models import ModelSpec

VOCAB, CONTEXT, WIDTH, HEADS, LAYERS = 64, 12, 32, 4, 2


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(WIDTH)
        self.attention = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(
            nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH)
        )
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        attended, _ = self.attention(h, h, h, attn_mask=causal, need_weights=False)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.norm2(x)))


class TinyDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.tokens.weight  # tied

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        steps = input_ids.shape[1]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=input_ids.device).triu(1)
        x = self.tokens(input_ids) + self.positions(torch.arange(steps, device=input_ids.device))
        for block in self.blocks:
            x = block(x, causal)
        logits = self.head(self.norm(x))
        # Next-token loss per sequence, reduced after DataParallel gathers it.
        per_token = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        return {"logits": logits, "loss": per_token.mean(1)}


def inputs(batch: int, dtype: torch.dtype, generator: torch.Generator):
    ids = torch.randint(0, VOCAB, (batch, CONTEXT + 1), generator=generator)
    return (ids[:, :-1],), {"labels": ids[:, 1:]}


spec = ModelSpec(
    name="tiny_decoder",
    build=TinyDecoder,
    inputs=inputs,
    loss=lambda outputs: outputs["loss"].mean(),
)
