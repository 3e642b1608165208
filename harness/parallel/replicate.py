"""Copying a module onto each device for one forward pass.

Replicas are shallow copies made by ``Module._replicate_for_data_parallel``
(modules such as RNNs override it to keep their caches consistent), with
parameters and buffers swapped for per-device tensors:

- under grad mode, every replica's parameters come from one autograd node per
  parameter (``Broadcast``): the first replica gets views of the originals (no
  copy), the others copies with their own storage; its backward sums the
  replicas' gradients in replica order (sparse ones stay sparse) into the
  original's one gradient, as ``torch.nn.DataParallel``'s Broadcast and
  ReduceAddCoalesced do. Left to autograd, the sum would follow the order the
  engine ran the replicas' backward in, which depends on the threads' history:
  the same run twice would differ in the last bit;
- without grad mode, every replica gets detached tensors: the first the
  originals' storage, the others copies;
- buffers of the first replica are the original tensors, so in-place updates
  (BatchNorm running statistics) made there survive; the other replicas get
  detached copies whose updates are discarded with the replica.
"""

from collections.abc import Sequence

import torch
from torch import nn

from ._devices import DeviceLike, as_devices


def copy_to(tensor: torch.Tensor, device: torch.device, *, detach: bool) -> torch.Tensor:
    """A copy of ``tensor`` on ``device`` with its own storage."""
    source = tensor.detach() if detach else tensor
    if source.device == device:
        return source.clone()
    return source.to(device, non_blocking=True)


class Broadcast(torch.autograd.Function):
    """A tensor's replicas, one per device; the backward sums their gradients in replica order."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, *devices: torch.device) -> tuple[torch.Tensor, ...]:
        ctx.source = tensor.device
        return tuple(
            tensor.view_as(tensor)
            if j == 0 and device == tensor.device
            else copy_to(tensor, device, detach=True)
            for j, device in enumerate(devices)
        )

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        total = None
        for grad in grads:
            if grad is not None:
                grad = grad.to(ctx.source)
                total = grad if total is None else total + grad
        return (total, *(None for _ in grads))


def broadcast_tensors(
    tensors: Sequence[torch.Tensor], devices: Sequence[torch.device]
) -> list[dict[int, torch.Tensor]]:
    """``copies[j][id(t)]`` is tensor ``t`` for replica ``j``, all of them from one
    ``Broadcast`` node per tensor."""
    copies: list[dict[int, torch.Tensor]] = [{} for _ in devices]
    for tensor in tensors:
        for row, replica in zip(copies, Broadcast.apply(tensor, *devices), strict=True):
            row[id(tensor)] = replica
    return copies


def replicate_tensors(
    tensors: Sequence[torch.Tensor],
    devices: Sequence[torch.device],
    *,
    detach: bool,
    share_first: bool,
) -> list[dict[int, torch.Tensor]]:
    """``copies[j][id(t)]`` is tensor ``t`` for replica ``j``."""
    copies = []
    for j, device in enumerate(devices):
        row = {}
        for tensor in tensors:
            if j == 0 and tensor.device == device:
                row[id(tensor)] = tensor.detach() if detach and not share_first else tensor
            else:
                row[id(tensor)] = copy_to(tensor, device, detach=detach)
        copies.append(row)
    return copies


def replicate(network: nn.Module, devices: Sequence[DeviceLike], detach: bool = False) -> list:
    """One replica of ``network`` per entry of ``devices`` (repeats allowed)."""
    devices = as_devices(devices)
    if not devices:
        return []

    params = list(network.parameters())
    if detach:
        param_copies = replicate_tensors(params, devices, detach=True, share_first=False)
    else:
        param_copies = broadcast_tensors(params, devices)
    buffers = list(network.buffers())
    # A buffer that requires grad is differentiable like a parameter.
    grad_buffers = [b for b in buffers if b.requires_grad and not detach]
    plain_buffers = [b for b in buffers if not (b.requires_grad and not detach)]
    buffer_copies = [
        grad | plain
        for grad, plain in zip(
            broadcast_tensors(grad_buffers, devices),
            replicate_tensors(plain_buffers, devices, detach=True, share_first=True),
        )
    ]

    modules = list(network.modules())
    module_index = {id(m): i for i, m in enumerate(modules)}
    copies = [[m._replicate_for_data_parallel() for m in modules] for _ in devices]

    for j, replica_modules in enumerate(copies):
        for module, replica in zip(modules, replica_modules):
            for key, child in module._modules.items():
                if child is None:
                    replica._modules[key] = None
                else:
                    setattr(replica, key, replica_modules[module_index[id(child)]])
            for key, param in module._parameters.items():
                if param is None:
                    replica._parameters[key] = None
                else:
                    # Not a Parameter any more (it is no leaf), so it lands in
                    # __dict__; RNN modules see the assignment and refresh
                    # their flat weight list.
                    setattr(replica, key, param_copies[j][id(param)])
            for key, buf in module._buffers.items():
                replica._buffers[key] = None if buf is None else buffer_copies[j][id(buf)]
    return [replica_modules[0] for replica_modules in copies]
