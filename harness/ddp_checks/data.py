"""One global batch on every rank, and each rank's equal shard of it.

Every rank builds the same global batch from a shared seed (the model zoo's input
recipes, ``harness.models``), takes its own rows, and can also run the whole batch
through a local single-process model: the reference a DDP result is compared with,
computed on every rank without communication.

With a loss that is a mean over rows and shards of equal size, the average of the ranks'
shard gradients is the full batch's gradient, which is what DDP's averaging promises.
"""

from typing import Any

import torch

from harness.models import ModelSpec

Batch = tuple[tuple, dict]

ROWS_PER_RANK = 3


def global_rows(world_size: int, rows_per_rank: int = ROWS_PER_RANK) -> int:
    """Rows of the global batch: an equal shard of ``rows_per_rank`` for every rank."""
    return rows_per_rank * world_size


def global_batch(
    spec: ModelSpec,
    world_size: int,
    dtype: torch.dtype,
    device: torch.device,
    seed: int,
    rows_per_rank: int = ROWS_PER_RANK,
) -> Batch:
    """The same ``(args, kwargs)`` on every rank: ``seed`` is shared, not rank-dependent."""
    return spec.make_inputs(global_rows(world_size, rows_per_rank), dtype, device, seed)


def shard_rows(obj: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s equal share of every tensor's rows in a (nested) batch.

    Rows ``rank * n / world_size`` up to ``(rank + 1) * n / world_size``; every tensor's
    first dimension must divide evenly. Containers keep their types; non-tensors are
    shared.
    """
    if isinstance(obj, torch.Tensor):
        rows = obj.shape[0]
        if rows % world_size:
            raise ValueError(f"{rows} rows do not split into {world_size} equal shards")
        size = rows // world_size
        return obj[rank * size : (rank + 1) * size]
    if isinstance(obj, dict):
        return type(obj)((k, shard_rows(v, rank, world_size)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(shard_rows(v, rank, world_size) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(shard_rows(v, rank, world_size) for v in obj)
    return obj


def mean_loss(output: Any) -> torch.Tensor:
    """The mean of the squares of every floating-point output, in the output's own dtype.

    A mean over rows, so the ranks' average over equal shards is the full batch's loss;
    kept in the output's dtype (float64 stays float64) so the shard and full-batch sides
    round alike.
    """
    if isinstance(output, torch.Tensor):
        return output.square().mean()
    values = output.values() if isinstance(output, dict) else output
    return sum(mean_loss(v) for v in values)


def shard_loss(spec: ModelSpec):
    """The loss the DDP claims train ``spec`` with: its own (a mean over rows, which the
    ``ModelSpec`` contract asks for), or for the zoo's default ``mean_loss``, the same loss
    kept in the output's dtype."""
    from harness.models import ModelSpec as Spec

    default = Spec.__dataclass_fields__["loss"].default
    return mean_loss if spec.loss is default else spec.loss


def shards_unlike_the_batch(spec: ModelSpec) -> str | None:
    """Why the average of a model's shard gradients is not its full-batch gradient, so that the
    claims comparing DDP with one process do not apply to it; None when they do."""
    from harness.model_specs import traits

    found = traits(spec)
    if found.batch_dependent:
        return (
            f"not applicable: {spec.name} normalises by batch statistics (BatchNorm), which each "
            "rank takes over its own shard; SyncBatchNorm makes them global (the BatchNorm "
            "claims of suites/ddp/test_batchnorm.py)"
        )
    if found.sparse_grads:
        return f"not applicable: {spec.name} has sparse gradients, which these claims leave out"
    return None


def random_rows(
    rows: int, width: int, dtype: torch.dtype, device: torch.device, seed: int
) -> torch.Tensor:
    """A ``(rows, width)`` batch of normals drawn from ``seed``, the same on every rank."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=gen, dtype=torch.float64).to(device, dtype)
