"""Distributed tests under torchrun: every rank runs pytest itself, tests run in-process.

torchrun (or any launcher that sets ``RANK`` and ``WORLD_SIZE``, with ``MASTER_ADDR`` and
``MASTER_PORT`` for the env:// rendezvous) starts pytest once per rank, across nodes. Each
rank initialises the default process group once, on the first distributed test, and runs
the same tests in the same order; ``LOCAL_RANK`` picks its device among ``--devices`` by
the same rules as the pool (``layout``), applied to the ranks of its node. Each rank writes
its own JUnit file, named after its host and rank.
"""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from harness.devices import DeviceSet
from harness.rankpool.layout import plan_ranks


class TorchrunEnvError(ValueError):
    """torchrun's variables are malformed; the message is one line."""


@dataclass(frozen=True)
class TorchrunWorld:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def active(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is one rank of a launched world (``RANK`` and ``WORLD_SIZE`` set)."""
    environ = os.environ if environ is None else environ
    return "RANK" in environ and "WORLD_SIZE" in environ


def world_from_env(environ: Mapping[str, str] | None = None) -> TorchrunWorld:
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in (
        ("RANK", None),
        ("WORLD_SIZE", None),
        ("LOCAL_RANK", "0"),
        ("LOCAL_WORLD_SIZE", None),
    ):
        text = environ.get(name, default)
        if text is None and name == "LOCAL_WORLD_SIZE":
            text = environ["WORLD_SIZE"]
        try:
            values[name] = int(text)
        except (TypeError, ValueError):
            raise TorchrunEnvError(f"{name}={text!r} is not an integer") from None
    world = TorchrunWorld(
        rank=values["RANK"],
        world_size=values["WORLD_SIZE"],
        local_rank=values["LOCAL_RANK"],
        local_world_size=values["LOCAL_WORLD_SIZE"],
    )
    if not 0 <= world.rank < world.world_size:
        raise TorchrunEnvError(f"RANK={world.rank} is outside WORLD_SIZE={world.world_size}")
    if not 0 <= world.local_rank < world.local_world_size:
        raise TorchrunEnvError(
            f"LOCAL_RANK={world.local_rank} is outside LOCAL_WORLD_SIZE={world.local_world_size}"
        )
    return world


def host_name() -> str:
    """This node's short host name, as JUnit file names carry it."""
    return socket.gethostname().split(".")[0] or "host"


def rank_junit_path(path: str, host: str, rank: int) -> str:
    """``reports/junit.xml`` -> ``reports/junit-node1-rank3.xml``."""
    original = Path(path)
    suffix = original.suffix or ".xml"
    stem = original.name[: -len(original.suffix)] if original.suffix else original.name
    return str(original.with_name(f"{stem}-{host}-rank{rank}{suffix}"))


_env = None  # this process's DistEnv, once the process group exists


def ensure_process_group(
    world: TorchrunWorld, devices: DeviceSet, ddp_impl: str, timeout: float
):  # -> DistEnv; imported lazily so the plugin loads without importing torch.distributed
    """Initialise the default process group once (env:// rendezvous); this rank's DistEnv."""
    global _env
    if _env is not None:
        return _env
    import torch
    import torch.distributed as dist

    from harness.rankpool.env import DistEnv

    layout = plan_ranks(devices, world.local_world_size)
    device = torch.device(layout.devices[world.local_rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        extra = {"device_id": device} if layout.backend == "nccl" else {}
        dist.init_process_group(
            layout.backend, init_method="env://", timeout=timedelta(seconds=timeout), **extra
        )
    _env = DistEnv(
        rank=world.rank,
        world_size=world.world_size,
        device=device,
        backend=layout.backend,
        ddp_impl=ddp_impl,
        local_rank=world.local_rank,
        local_world_size=world.local_world_size,
    )
    return _env


def shutdown() -> None:
    """Destroy the process group this module initialised, if any."""
    global _env
    if _env is None:
        return
    _env = None
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
