"""One training step of a zoo model at a given batch size, for the memory checks.

Unlike ``harness.training.run_steps`` nothing is recorded: a copy of the outputs or gradients
would add to the very footprint being measured. The step keeps no tensor once it returns
(gradients stay on the parameters, as between the steps of a training loop). Its inputs are
tiled on the device from a seed batch (``harness.memory.inputs``): the same bytes as
``make_inputs`` gives, without drawing gigabytes of random numbers on the CPU per step.
"""

from collections.abc import Callable

import torch
from torch import nn

from harness.memory.device import DeviceMemory
from harness.memory.inputs import TiledInputs
from harness.models import ModelSpec
from harness.training import OPTIMIZERS


class TrainingStep:
    """A zoo model, its Adam optimizer(s) and a step: forward, loss, backward, update.

    ``forward`` is the model or a wrapper of it (the DataParallel under test); ``peaks`` maps
    each batch that completed to the peak bytes ``memory`` held during its last step.
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: torch.device,
        memory: DeviceMemory,
        *,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.spec = spec
        self.device = device
        self.memory = memory
        self.dtype = dtype
        self.model = spec.make(dtype, device).train()
        self.forward = self.model if wrap is None else wrap(self.model)
        self.optimizers = OPTIMIZERS["adam"].build(self.model)
        self.inputs = TiledInputs(spec, dtype, device)
        self.peaks: dict[int, int] = {}

    def __call__(self, batch: int) -> None:
        self.memory.reset_peak()
        self.model.zero_grad(set_to_none=True)
        args, kwargs = self.inputs(batch)
        self.spec.loss(self.forward(*args, **kwargs)).backward()
        for optimizer in self.optimizers:
            optimizer.step()
        self.peaks[batch] = self.memory.peak()
