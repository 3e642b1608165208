"""Comparing tensors across the ranks of the default process group.

Every helper all-gathers first and judges afterwards: every rank receives the same
gathered data and therefore raises the same assertion, and no rank is left waiting in a
collective that another rank never reaches because it failed early. Tensors are
gathered on their device with NCCL, on the CPU with gloo (whose CPU path every build
has), and compared on the CPU.
"""

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn

from harness.tolerances import assert_close, difference


def gather_from_ranks(tensor: torch.Tensor) -> list[torch.Tensor]:
    """``tensor`` as every rank holds it, in rank order, on the CPU.

    Every rank must pass a tensor of the same shape and dtype (all_gather's rule).
    """
    tensor = tensor.detach().contiguous()
    if "gloo" in str(dist.get_backend()):  # "gloo", or a per-device spec naming it
        tensor = tensor.cpu()
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return [t.cpu() for t in gathered]


def from_rank0(data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every rank (other ranks pass None): what rank 0 wrote to a file,
    delivered without assuming the ranks share a file system."""
    box = [data if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_all(tensors: Mapping[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each named tensor as every rank holds it, in rank order."""
    return {name: gather_from_ranks(tensor) for name, tensor in tensors.items()}


def module_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name (``parameter net.0.weight``, ``buffer bn.running_mean``)."""
    state = {f"parameter {name}": p for name, p in module.named_parameters()}
    state.update({f"buffer {name}": b for name, b in module.named_buffers()})
    return state


def assert_same_on_every_rank(
    tensors: Mapping[str, torch.Tensor],
    *,
    what: str,
    exact: bool = True,
    device_kind: str = "cpu",
) -> None:
    """Every rank holds the same values as rank 0, bitwise (``exact``) or within tolerance.

    ``what`` says which moment is checked ("after wrapping", "after step 3"); the
    message names the tensor, the first rank that differs and by how much.
    """
    for name, per_rank in gather_all(tensors).items():
        ref = per_rank[0]
        for rank, got in enumerate(per_rank[1:], start=1):
            label = f"{what}: {name} on rank {rank} vs rank 0"
            if exact:
                if not torch.equal(got, ref):
                    raise AssertionError(f"{label}: not bitwise equal ({difference(got, ref)})")
            else:
                assert_close(got, ref, device_kind=device_kind, what=label)


def assert_ranks_differ(gathered: Mapping[str, list[torch.Tensor]], *, what: str) -> None:
    """A premise: no rank already holds rank 0's values of any gathered tensor."""
    same = [
        f"{name} (ranks {[r for r, t in enumerate(per_rank) if r and torch.equal(t, per_rank[0])]})"
        for name, per_rank in gathered.items()
        if any(torch.equal(t, per_rank[0]) for t in per_rank[1:])
    ]
    assert not same, f"premise: {what}, yet these already equal rank 0's: {', '.join(same)}"


def assert_every_rank_holds_rank0s(
    before: Mapping[str, list[torch.Tensor]], after: Mapping[str, list[torch.Tensor]]
) -> None:
    """Every rank's tensors (``after``) are bitwise rank 0's from ``before``.

    Both are ``gather_all`` results. The message says when a rank still holds its own.
    """
    for name, per_rank in after.items():
        for rank, got in enumerate(per_rank):
            own = " (it still holds its own)" if torch.equal(got, before[name][rank]) else ""
            assert torch.equal(got, before[name][0]), (
                f"{name} on rank {rank} is not rank 0's value from before{own}"
            )
