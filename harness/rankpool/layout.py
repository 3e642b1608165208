"""Which device and process-group backend each rank of a world gets.

- CPU devices: every rank on the CPU, gloo.
- CUDA, no more ranks than distinct GPUs in ``--devices``: rank *r* on the *r*-th distinct
  GPU, NCCL.
- CUDA, more ranks than distinct GPUs (``--devices cuda:0,0``, or a world wider than the
  GPUs): ranks share GPUs round-robin over ``--devices`` in its order, gloo with CUDA
  tensors, since NCCL refuses two ranks on one GPU.

Devices are strings (``"cpu"``, ``"cuda:1"``) so a layout is plain data for the ranks.
"""

from dataclasses import dataclass

from harness.devices import DeviceSet


@dataclass(frozen=True)
class RankLayout:
    backend: str  # "gloo" | "nccl"
    devices: tuple[str, ...]  # one per rank, in rank order

    @property
    def world_size(self) -> int:
        return len(self.devices)


def plan_ranks(
    devices: DeviceSet | None, world_size: int, *, nccl_available: bool | None = None
) -> RankLayout:
    """The layout of ``world_size`` ranks over ``devices`` (``None``: the CPU)."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if devices is None or devices.kind == "cpu":
        return RankLayout("gloo", ("cpu",) * world_size)
    if nccl_available is None:
        import torch.distributed as dist

        nccl_available = dist.is_available() and dist.is_nccl_available()
    indices = [int(index) for index in devices.device_ids]
    distinct = list(dict.fromkeys(indices))
    if world_size <= len(distinct) and nccl_available:
        return RankLayout("nccl", tuple(f"cuda:{index}" for index in distinct[:world_size]))
    if world_size <= len(distinct):  # a torch build without NCCL: gloo on distinct GPUs
        return RankLayout("gloo", tuple(f"cuda:{index}" for index in distinct[:world_size]))
    shared = tuple(f"cuda:{indices[rank % len(indices)]}" for rank in range(world_size))
    return RankLayout("gloo", shared)
