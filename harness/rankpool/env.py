"""``DistEnv``: what a distributed test body sees of its rank.

Built on the rank itself (by the pool's worker, or from torchrun's environment), after the
default process group exists. ``ddp`` wraps a module with the implementation chosen by
``--ddp-impl``, resolved inside the rank from its spec string.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    device: torch.device
    backend: str  # "gloo" | "nccl"
    ddp_impl: str = "reference"  # the --ddp-impl spec
    local_rank: int = 0
    local_world_size: int = 1

    def ddp(self, module: nn.Module, **kwargs: Any) -> nn.Module:
        """``module`` moved to this rank's device and wrapped by the ``--ddp-impl`` factory.

        Called as ``factory(module, device_ids=[index] on CUDA else None, **kwargs)``, like
        ``torch.nn.parallel.DistributedDataParallel``; ``kwargs`` may override ``device_ids``.
        """
        factory = resolve_ddp_factory(self.ddp_impl)
        if self.device.type == "cuda":
            kwargs.setdefault("device_ids", [self.device.index])
        else:
            kwargs.setdefault("device_ids", None)
        return factory(module.to(self.device), **kwargs)


@functools.cache
def resolve_ddp_factory(spec: str) -> Callable[..., nn.Module]:
    """The factory for a ``--ddp-impl`` spec (resolved once per rank process)."""
    from harness.impl import ddp_factory

    return ddp_factory(spec)
