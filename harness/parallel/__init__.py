"""Reference DataParallel and DistributedDataParallel, one step per module as in torch."""

from .data_parallel import DataParallel
from .ddp import DistributedDataParallel
from .parallel_apply import ReplicaWorkers, parallel_apply
from .replicate import replicate
from .scatter_gather import gather, scatter, scatter_kwargs

__all__ = [
    "DataParallel",
    "DistributedDataParallel",
    "ReplicaWorkers",
    "gather",
    "parallel_apply",
    "replicate",
    "scatter",
    "scatter_kwargs",
]
