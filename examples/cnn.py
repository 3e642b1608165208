"""A small image classifier with BatchNorm, as a user would write it for the harness.

    pytest suites/dp suites/ddp --model examples.cnn:spec

BatchNorm makes its outputs depend on the batch: under DataParallel each replica normalises its
own chunk, which the harness allows for, and the DDP claims that compare with one process on
the full batch do not apply to it (they say so); SyncBatchNorm is the DDP remedy.
"""

import torch
from torch import nn
from torch.nn import functional as F

from harness.models import ModelSpec

CLASSES = 10


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1, stride=2),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * channels, CLASSES)

    def forward(self, images: torch.Tensor, *, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(images).flatten(1))
        # One loss per image, reduced after DataParallel gathers them.
        return {"logits": logits, "loss": F.cross_entropy(logits, labels, reduction="none")}


def inputs(batch: int, dtype: torch.dtype, generator: torch.Generator):
    images = torch.randn(batch, 3, 12, 12, generator=generator).to(dtype)
    labels = torch.randint(0, CLASSES, (batch,), generator=generator)
    return (images,), {"labels": labels}


spec = ModelSpec(
    name="small_cnn",
    build=SmallCNN,
    inputs=inputs,
    loss=lambda outputs: outputs["loss"].mean(),
)
