"""What each replica should receive: ``torch.chunk``'s rule written out, arguments narrowed to
one chunk, and rows labelled with their batch index so a record says which rows it holds.

Built independently of any implementation: the expected side of every split claim.
"""

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch


def chunk_sizes(batch: int, parts: int) -> list[int]:
    """The chunk sizes ``torch.chunk(x, parts)`` gives for ``batch`` rows.

    Chunks hold ``ceil(batch / parts)`` rows, the last one what is left, so a
    small batch gives fewer chunks than ``parts``: 10 rows in 3 parts are
    4, 4, 2; 9 rows in 8 parts are 2, 2, 2, 2, 1. An empty batch gives
    ``parts`` empty chunks.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    if batch == 0:
        return [0] * parts
    size = math.ceil(batch / parts)
    sizes = [size] * (batch // size)
    if batch % size:
        sizes.append(batch % size)
    return sizes


def chunk_bounds(batch: int, parts: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each chunk of ``chunk_sizes(batch, parts)``, in order."""
    bounds, start = [], 0
    for size in chunk_sizes(batch, parts):
        bounds.append((start, size))
        start += size
    return bounds


def expected_split(obj: Any, start: int, length: int, dim: int = 0) -> Any:
    """``obj`` with every tensor narrowed to rows ``start:start+length`` along ``dim``.

    Containers keep their type (tuple, list, dict and its subclasses,
    namedtuple); anything else is returned as is, the very same object.
    """
    if isinstance(obj, torch.Tensor):
        return obj.narrow(dim, start, length)
    if _is_namedtuple(obj):
        return type(obj)(*(expected_split(v, start, length, dim) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(expected_split(v, start, length, dim) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((k, expected_split(v, start, length, dim)) for k, v in obj.items())
    return obj


def assert_same_arguments(received: Any, expected: Any, what: str) -> None:
    """Exact comparison of argument structures, leaf by leaf.

    Container types must be identical (a namedtuple is not a tuple, a list is
    not a tuple), dict keys in the same order, tensors equal in dtype, shape
    and every element (moving rows is exact), and non-tensor leaves the very
    same object (``is``), since DataParallel shares them rather than copying.
    """
    if type(received) is not type(expected):
        raise AssertionError(
            f"{what}: received a {type(received).__name__}, expected a {type(expected).__name__}"
        )
    if isinstance(expected, torch.Tensor):
        if received.dtype != expected.dtype or received.shape != expected.shape:
            raise AssertionError(
                f"{what}: received {received.dtype} {tuple(received.shape)}, "
                f"expected {expected.dtype} {tuple(expected.shape)}"
            )
        if not torch.equal(received.detach().cpu(), expected.detach().cpu()):
            raise AssertionError(f"{what}: received other rows than the expected slice")
    elif isinstance(expected, dict):
        if list(received) != list(expected):
            raise AssertionError(f"{what}: keys {list(received)}, expected {list(expected)}")
        for key in expected:
            assert_same_arguments(received[key], expected[key], f"{what}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        if len(received) != len(expected):
            raise AssertionError(f"{what}: {len(received)} items, expected {len(expected)}")
        for i, (r, e) in enumerate(zip(received, expected)):
            assert_same_arguments(r, e, f"{what}[{i}]")
    elif received is not expected:
        raise AssertionError(
            f"{what}: received {received!r} (id {id(received):#x}), not the object passed "
            f"in, {expected!r} (id {id(expected):#x})"
        )


# ---------------------------------------------------------------- labelled rows


def labelled(
    shape: Sequence[int],
    dim: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Random normals of ``shape`` whose rows along ``dim`` carry their index.

    The entry at index 0 of every other axis is the row's index (exact in
    float32 up to 2**24 rows); the rest is random, so rows differ everywhere.
    """
    gen = torch.Generator().manual_seed(seed)
    tensor = torch.randn(*shape, generator=gen, dtype=torch.float64)
    tensor[_label_index(tensor.dim(), dim)] = torch.arange(shape[dim], dtype=torch.float64)
    return tensor.to(dtype=dtype, device=device)


def labels(tensor: torch.Tensor, dim: int = 0) -> list[int]:
    """The row indices ``labelled`` wrote into ``tensor`` (or a slice of it)."""
    return [int(v) for v in tensor.detach()[_label_index(tensor.dim(), dim)].cpu().tolist()]


def _label_index(ndim: int, dim: int) -> tuple:
    index: list[Any] = [0] * ndim
    index[dim] = slice(None)
    return tuple(index)


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields") and hasattr(obj, "_asdict")


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a structure of tuples, lists and dicts, depth first."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)
