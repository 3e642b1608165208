"""scatter, scatter_kwargs and gather of the reference DataParallel, on CPU virtual devices."""

import re
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import pytest
import torch
import torch.nn.parallel.scatter_gather as torch_scatter_gather

from harness.parallel import gather, scatter, scatter_kwargs

CPU = torch.device("cpu")
Pair = namedtuple("Pair", ["x", "tag"])

# torch/nn/parallel/_functions.py, Gather.forward, written out here rather than
# imported so that a change of the harness's text is caught.
TORCH_SCALAR_WARNING = (
    "Was asked to gather along dimension 0, but all input tensors were scalars; "
    "will instead unsqueeze and return a vector."
)


class TaggedDict(dict):
    """A dict subclass, to check that container types survive scatter and gather."""


@dataclass
class Box:
    value: torch.Tensor


def devices(n: int) -> list[torch.device]:
    return [CPU] * n


def rows(batch: int, width: int = 3) -> torch.Tensor:
    """Rows that differ from each other, so a reordering or a lost row shows."""
    return torch.arange(batch * width, dtype=torch.float64).reshape(batch, width)


# --------------------------------------------------------------------------- scatter


@pytest.mark.parametrize(
    ("batch", "n", "sizes"),
    [
        (10, 3, [4, 4, 2]),
        (9, 8, [2, 2, 2, 2, 1]),  # torch.chunk: five chunks, three devices unused
        (8, 4, [2, 2, 2, 2]),
        (3, 4, [1, 1, 1]),
        (1, 4, [1]),
        (5, 1, [5]),
    ],
)
def test_scatter_follows_torch_chunk(batch, n, sizes):
    x = rows(batch)
    chunks = scatter(x, devices(n))
    assert [c.shape[0] for c in chunks] == sizes
    assert sizes == [c.shape[0] for c in x.chunk(n)]
    # The chunks are consecutive row ranges in order.
    assert torch.equal(torch.cat(chunks), x)
    assert all(c.device == CPU for c in chunks)


def test_scatter_of_empty_batch_gives_one_empty_chunk_per_device():
    chunks = scatter(torch.empty(0, 3), devices(4))
    assert len(chunks) == 4
    assert all(c.shape == (0, 3) for c in chunks)


@pytest.mark.parametrize(("dim", "axis"), [(1, 1), (-1, 2), (-3, 0), (2, 2)])
def test_scatter_along_any_dim(dim, axis):
    x = torch.arange(4 * 6 * 5, dtype=torch.float32).reshape(4, 6, 5)
    chunks = scatter(x, devices(2), dim=dim)
    expected = x.chunk(2, axis)
    assert len(chunks) == 2
    for got, want in zip(chunks, expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(torch.cat(chunks, axis), x)


def test_scatter_nested_containers_keep_their_types_per_replica():
    x = rows(4)
    marker = object()
    inputs = (
        x,
        [x + 100, "label"],
        TaggedDict(a=x + 200, b=7),
        Pair(x + 300, "tag"),
        OrderedDict(z=x + 400),
        marker,
    )
    parts = scatter(inputs, devices(2))
    assert len(parts) == 2
    for i, part in enumerate(parts):
        lo, hi = 2 * i, 2 * i + 2
        assert type(part) is tuple
        assert len(part) == len(inputs)
        assert torch.equal(part[0], x[lo:hi])

        assert type(part[1]) is list
        assert torch.equal(part[1][0], x[lo:hi] + 100)
        assert part[1][1] == "label"

        assert type(part[2]) is TaggedDict
        assert list(part[2]) == ["a", "b"]
        assert torch.equal(part[2]["a"], x[lo:hi] + 200)
        assert part[2]["b"] == 7

        assert type(part[3]) is Pair
        assert torch.equal(part[3].x, x[lo:hi] + 300)
        assert part[3].tag == "tag"

        assert type(part[4]) is OrderedDict
        assert torch.equal(part[4]["z"], x[lo:hi] + 400)

        assert part[5] is marker


def test_scatter_shares_non_tensors_by_identity():
    shared = {"config", "flags"}  # sets are not walked
    label = object()
    box = Box(rows(4))  # dataclasses are not split (torch does not walk them either)
    parts = scatter((rows(4), shared, label, box, None), devices(2))
    assert len(parts) == 2
    for part in parts:
        assert part[1] is shared
        assert part[2] is label
        assert part[3] is box
        assert part[3].value.shape == (4, 3)
        assert part[4] is None


def test_scatter_rebuilds_containers_without_tensors_per_replica():
    config = {"depth": 2}
    parts = scatter((rows(2), config), devices(2))
    assert [p[1] for p in parts] == [config, config]
    assert parts[0][1] is not parts[1][1]


def test_scatter_of_only_non_tensors_gives_one_entry_per_device():
    label = object()
    parts = scatter((label, 3), devices(3))
    assert parts == [(label, 3)] * 3
    assert all(p[0] is label for p in parts)
    assert scatter("text", devices(2)) == ["text", "text"]


def test_scatter_truncates_to_the_smallest_batch():
    # Silently, as in torch: two tensors with different batch sizes are cut to the shorter
    # (docs/design.md).
    big, small = rows(8), rows(2) + 1000
    parts = scatter((big, small), devices(4))
    assert len(parts) == 2
    assert torch.equal(parts[0][0], big[0:2])
    assert torch.equal(parts[1][0], big[2:4])
    assert torch.equal(parts[0][1], small[0:1])
    assert torch.equal(parts[1][1], small[1:2])


def test_scatter_chunks_carry_gradients_back_to_the_input():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    chunks = scatter(x, devices(2))
    assert all(c.requires_grad for c in chunks)
    weights = [2.0, -3.0]
    sum(w * c.sum() for w, c in zip(weights, chunks)).backward()
    expected = torch.cat([torch.full((3, 3), 2.0), torch.full((2, 3), -3.0)]).double()
    assert torch.equal(x.grad, expected)


# --------------------------------------------------------------------------- scatter_kwargs


def test_scatter_kwargs_splits_keyword_tensors_like_positional_ones():
    x, mask = rows(6), rows(6) + 50
    args, kwargs = scatter_kwargs((x,), {"mask": mask, "flag": True}, devices(3))
    assert len(args) == len(kwargs) == 3
    assert isinstance(args, tuple)
    assert isinstance(kwargs, tuple)
    for i in range(3):
        assert torch.equal(args[i][0], x[2 * i : 2 * i + 2])
        assert torch.equal(kwargs[i]["mask"], mask[2 * i : 2 * i + 2])
        assert kwargs[i]["flag"] is True


def test_scatter_kwargs_without_kwargs_gives_empty_dicts():
    args, kwargs = scatter_kwargs((rows(4),), None, devices(2))
    assert len(args) == 2
    assert kwargs == ({}, {})
    args, kwargs = scatter_kwargs((rows(4),), {}, devices(2))
    assert kwargs == ({}, {})


def test_scatter_kwargs_with_only_kwargs_gives_empty_positional_tuples():
    args, kwargs = scatter_kwargs((), {"x": rows(4)}, devices(2))
    assert args == ((), ())
    assert torch.equal(kwargs[1]["x"], rows(4)[2:])


def test_scatter_kwargs_with_nothing_gives_nothing():
    assert scatter_kwargs((), None, devices(2)) == ((), ())
    assert scatter_kwargs((), {}, devices(2)) == ((), ())


def test_scatter_kwargs_non_tensor_kwarg_with_small_batch_does_not_add_replicas(monkeypatch):
    """The deliberate difference from torch (pytorch issues 31460, 16432).

    A batch of 2 on 4 devices gives 2 positional chunks, while a non-tensor
    kwarg is copied to all 4. Here both sides are cut to 2 replicas. Torch pads
    the positional side with ``()``, so replicas 2 and 3 would be called as
    ``module(flag=True)`` and fail with "missing 1 required positional argument".
    """
    x = rows(2)
    args, kwargs = scatter_kwargs((x,), {"flag": True}, devices(4))
    assert len(args) == len(kwargs) == 2
    assert torch.equal(args[0][0], x[:1])
    assert torch.equal(args[1][0], x[1:])
    assert kwargs == ({"flag": True}, {"flag": True})

    # What torch does: its scatter_kwargs, fed by our scatter (torch's own
    # Scatter refuses CPU tensors; the container logic is the same).
    monkeypatch.setattr(torch_scatter_gather, "scatter", scatter)
    torch_args, torch_kwargs = torch_scatter_gather.scatter_kwargs((x,), {"flag": True}, devices(4))
    assert len(torch_args) == len(torch_kwargs) == 4
    assert torch_args[2:] == ((), ())  # replicas without their positional arguments


def test_scatter_kwargs_cuts_both_sides_to_the_shorter_count(monkeypatch):
    x, mask = rows(4), rows(2) + 50
    args, kwargs = scatter_kwargs((x,), {"mask": mask}, devices(4))
    assert len(args) == len(kwargs) == 2
    # Rows are paired as positional tensors of different sizes would be.
    assert torch.equal(args[1][0], x[1:2])
    assert torch.equal(kwargs[1]["mask"], mask[1:2])

    args, kwargs = scatter_kwargs((mask,), {"x": x}, devices(4))
    assert len(args) == len(kwargs) == 2

    # Torch leaves the counts unequal here (4 positional, 2 keyword), which its
    # parallel_apply then rejects.
    monkeypatch.setattr(torch_scatter_gather, "scatter", scatter)
    torch_args, torch_kwargs = torch_scatter_gather.scatter_kwargs((x,), {"mask": mask}, devices(4))
    assert (len(torch_args), len(torch_kwargs)) == (4, 2)


def test_scatter_kwargs_along_another_dim():
    x = rows(3, width=4)
    args, kwargs = scatter_kwargs((x,), {"y": x * 2}, devices(2), dim=1)
    assert [a[0].shape for a in args] == [(3, 2), (3, 2)]
    assert torch.equal(kwargs[1]["y"], (x * 2)[:, 2:])


# --------------------------------------------------------------------------- gather


def test_gather_concatenates_in_replica_order():
    parts = [torch.full((2, 3), float(i)) for i in range(3)] + [torch.full((1, 3), 3.0)]
    out = gather(parts, CPU)
    assert out.shape == (7, 3)
    assert out[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3]


def test_gather_inverts_scatter():
    x = torch.randn(9, 4)
    assert torch.equal(gather(scatter(x, devices(4)), CPU), x)
    assert torch.equal(gather(scatter(x, devices(3), dim=1), CPU, dim=1), x)


@pytest.mark.parametrize("dim", [1, -1])
def test_gather_along_another_dim(dim):
    parts = [torch.zeros(2, 1), torch.ones(2, 2)]
    out = gather(parts, CPU, dim=dim)
    assert out.tolist() == [[0, 1, 1], [0, 1, 1]]


def test_gather_keeps_nested_container_types():
    def output(i: int):
        t = torch.full((1, 2), float(i))
        return TaggedDict(
            a=t, pair=Pair(t + 10, None), seq=[t + 20, (t + 30,)], nothing=None, od=OrderedDict(k=t)
        )

    out = gather([output(0), output(1)], CPU)
    assert type(out) is TaggedDict
    assert list(out) == ["a", "pair", "seq", "nothing", "od"]
    assert out["a"][:, 0].tolist() == [0, 1]
    assert type(out["pair"]) is Pair
    assert out["pair"].x[:, 0].tolist() == [10, 11]
    assert out["pair"].tag is None
    assert type(out["seq"]) is list
    assert type(out["seq"][1]) is tuple
    assert out["seq"][0][:, 0].tolist() == [20, 21]
    assert out["seq"][1][0][:, 0].tolist() == [30, 31]
    assert out["nothing"] is None
    assert type(out["od"]) is OrderedDict


def test_gather_of_none_is_none():
    assert gather([None, None], CPU) is None


def test_gather_of_scalars_gives_a_vector_with_torch_warning():
    losses = [torch.tensor(1.5), torch.tensor(2.5), torch.tensor(-1.0)]
    with pytest.warns(UserWarning, match=re.escape(TORCH_SCALAR_WARNING)):
        out = gather(losses, CPU)
    assert out.shape == (3,)
    assert out.tolist() == [1.5, 2.5, -1.0]


def test_gather_of_scalars_along_another_dim_raises():
    with pytest.raises(ValueError, match="dimension 1"):
        gather([torch.tensor(1.0), torch.tensor(2.0)], CPU, dim=1)


def test_gather_moves_to_the_target_device():
    # The meta device accepts copies from the CPU, so a real move can be checked without a GPU.
    out = gather([torch.ones(2, 2), torch.ones(1, 2)], "meta")
    assert out.device.type == "meta"
    assert out.shape == (3, 2)
    nested = gather([{"y": torch.ones(1)}, {"y": torch.ones(1)}], torch.device("meta"))
    assert nested["y"].device.type == "meta"


def test_gather_target_minus_one_is_the_cpu():
    # An int is a CUDA index, as in torch.nn.DataParallel, except -1.
    out = gather([torch.ones(1), torch.ones(1)], -1)
    assert out.device == CPU
    assert out.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("outputs", "type_name"),
    [([Box(torch.ones(1)), Box(torch.ones(1))], "Box"), ([1, 2], "int"), (["a", "b"], "str")],
)
def test_gather_of_unsupported_type_raises_type_error_naming_it(outputs, type_name):
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        gather(outputs, CPU)


def test_gather_of_unsupported_type_inside_a_container_names_it():
    with pytest.raises(TypeError, match="Box"):
        gather([(torch.ones(1), Box(torch.ones(1)))] * 2, CPU)


def test_gather_of_dicts_with_different_key_counts_raises():
    with pytest.raises(ValueError, match="keys"):
        gather([{"a": torch.ones(1)}, {"a": torch.ones(1), "b": torch.ones(1)}], CPU)


def test_gather_of_sequences_with_different_lengths_raises():
    with pytest.raises(ValueError):
        gather([(torch.ones(1),), (torch.ones(1), torch.ones(1))], CPU)


def test_gather_is_differentiable():
    a = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    out = gather([{"y": a * 2}, {"y": b * 2}], CPU)
    assert out["y"].requires_grad
    weights = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    (out["y"] * weights).sum().backward()
    assert torch.equal(a.grad, 2 * weights[:2])
    assert torch.equal(b.grad, 2 * weights[2:])


def test_gather_of_scalars_is_differentiable():
    a = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(2.0, requires_grad=True)
    with pytest.warns(UserWarning, match="scalars"):
        out = gather([a * 3, b * 5], CPU)
    (out * torch.tensor([1.0, 10.0])).sum().backward()
    assert a.grad.item() == 3.0
    assert b.grad.item() == 50.0
