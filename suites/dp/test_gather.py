"""How DataParallel joins the replicas' outputs.

Claims shared by ``torch.nn.DataParallel`` and the reference:

- the gathered output equals the single-device module's, for every model of
  the zoo (BatchNorm models in eval mode, where the claim holds);
- containers keep their types: dict (and OrderedDict) with its key order,
  namedtuple type and fields, list stays list, tuple stays tuple, None stays;
- 0-dim outputs become a vector with one entry per replica, with a UserWarning;
- outputs land on ``output_device``, by default ``device_ids[0]``;
- outputs are concatenated along ``dim``;
- outputs stay connected to the autograd graph: backward reaches every
  parameter with the single-device gradients.
"""

import warnings
from collections import OrderedDict, namedtuple
from typing import NamedTuple

import pytest
import torch

from harness.model_specs import model_spec, traits
from harness.probes import Probe, chunk_bounds, labelled, tensors_in
from harness.tolerances import assert_close
from harness.training import assert_gatherable, comparable

Pair = namedtuple("Pair", ["left", "right"])


class Stats(NamedTuple):
    mean: torch.Tensor
    spread: torch.Tensor


def zoo_batch(devices) -> int:
    """A batch the device count does not divide (for more than one device)."""
    return 4 * devices.count + 3


def single_and_parallel(spec, dtype, devices, data_parallel):
    """The same model twice (same seed, dropout off): plain on the primary device, and
    wrapped; both in eval mode where the outputs depend on the batch (BatchNorm)."""
    single = comparable(spec, dtype, devices.primary)
    parallel = comparable(spec, dtype, devices.primary)
    if traits(spec).batch_dependent:
        single.eval()
        parallel.eval()
    return single, parallel, data_parallel(parallel)


def test_output_matches_the_single_device_module(data_parallel, devices, model, dtype):
    spec = model_spec(model)
    single, _, wrapped = single_and_parallel(spec, dtype, devices, data_parallel)
    args, kwargs = spec.make_inputs(zoo_batch(devices), dtype, devices.primary)
    with torch.no_grad():
        expected = single(*args, **kwargs)
        assert_gatherable(expected)
        actual = wrapped(*args, **kwargs)
    assert_close(actual, expected, device_kind=devices.kind, what=f"{spec.name} output")


def nested_response(probe, args, kwargs):
    """A structure holding every container kind gather must keep."""
    (x,) = args
    y = x * probe.gain
    return OrderedDict(
        plain=y,
        pair=Pair(y + 1, [y * 2, (y * 3, None)]),
        stats=Stats(y.mean(dim=1, keepdim=True), y.std(dim=1, keepdim=True)),
        listed=[y, y - 1],
        tupled=(y * 0.5,),
        mapping={"b": y, "a": -y},
        nothing=None,
    )


def test_nested_output_containers_keep_their_types(data_parallel, devices, replicas):
    x = labelled((zoo_batch(devices), 4), device=devices.primary)
    expected = nested_response(Probe().to(devices.primary), (x,), {})
    actual = data_parallel(Probe(nested_response), device_ids=devices.device_ids[:replicas])(x)
    assert type(actual) is OrderedDict
    assert list(actual) == list(expected)
    assert type(actual["pair"]) is Pair
    assert type(actual["stats"]) is Stats
    assert actual["stats"]._fields == ("mean", "spread")
    assert type(actual["pair"].right) is list
    assert type(actual["pair"].right[1]) is tuple
    assert type(actual["listed"]) is list
    assert type(actual["tupled"]) is tuple
    assert type(actual["mapping"]) is dict
    assert list(actual["mapping"]) == ["b", "a"]
    assert actual["nothing"] is None
    assert actual["pair"].right[1][1] is None
    # assert_close also compares container types, key order and fields at every level.
    assert_close(actual, expected, device_kind=devices.kind, what="nested output")


def test_scalar_outputs_become_one_entry_per_replica_with_a_warning(data_parallel, devices):
    if devices.count < 2:
        pytest.skip("needs at least 2 devices: with one, the module's scalar is returned as is")
    batch = zoo_batch(devices)
    x = labelled((batch, 3), dtype=torch.float64, device=devices.primary)
    probe = Probe(lambda probe, args, kwargs: (args[0] * probe.gain).sum())
    with pytest.warns(UserWarning, match="scalar"):
        out = data_parallel(probe)(x)
    chunks = chunk_bounds(batch, devices.count)
    expected = torch.stack([x.narrow(0, *bounds).sum() for bounds in chunks])
    assert out.shape == (len(chunks),), f"{len(chunks)} replicas ran, one entry each"
    assert_close(out.detach(), expected, device_kind=devices.kind, what="per-replica scalars")


def test_output_lands_on_device_ids_0_by_default(data_parallel, devices):
    x = labelled((zoo_batch(devices), 3), device=devices.primary)
    (out,) = data_parallel(Probe())(x)
    assert out.device == devices.primary


def other_output_devices(devices) -> list[tuple[object, torch.device]]:
    """``(output_device argument, device the output must land on)`` other than device_ids[0].

    On CUDA: the CPU, spelled -1 as torch.nn.DataParallel accepts it, and
    every other distinct GPU of ``--devices``. On virtual CPU devices every
    replica is on the CPU, so the meta device stands in as the distinct
    target that shows whether ``output_device`` is honoured.
    """
    if devices.kind == "cpu":
        return [(torch.device("meta"), torch.device("meta"))]
    others = [(-1, torch.device("cpu"))]
    others += [(d.index, d) for d in dict.fromkeys(devices.devices) if d != devices.primary]
    return others


def test_output_lands_on_the_requested_output_device(data_parallel, devices):
    if devices.count < 2:
        pytest.skip(
            "needs at least 2 devices: with one, DataParallel returns the module's output "
            "without gathering, so output_device is unused"
        )
    x = labelled((zoo_batch(devices), 3), device=devices.primary)
    for argument, target in other_output_devices(devices):
        with warnings.catch_warnings():
            # torch warns that -1 for the CPU is deprecated, yet refuses "cpu" here.
            warnings.filterwarnings("ignore", "Using -1 to represent CPU", FutureWarning)
            (out,) = data_parallel(Probe(), output_device=argument)(x)
        assert out.device == target, f"output_device={argument!r} gave an output on {out.device}"
        assert out.shape == x.shape
        if target.type != "meta":
            assert torch.equal(out.detach().cpu(), x.cpu())


@pytest.mark.parametrize("dim", [1, -1], ids=lambda d: f"dim={d}")
def test_outputs_are_gathered_along_dim(data_parallel, devices, dim, replicas):
    shape = [3, 4, 2]
    shape[dim] = zoo_batch(devices)
    x = labelled(shape, dim, device=devices.primary)
    # Mixes values along axis 0, which is never the batch axis here.
    probe = Probe(lambda probe, args, kwargs: (args[0] * probe.gain).cumsum(0))
    expected = x.cumsum(0)
    out = data_parallel(probe, dim=dim, device_ids=devices.device_ids[:replicas])(x)
    assert out.shape == expected.shape, f"gathered along dim={dim}: {tuple(out.shape)}"
    assert_close(out.detach(), expected, device_kind=devices.kind, what=f"output, dim={dim}")


def test_gathered_outputs_stay_connected_to_the_graph(data_parallel, devices, model, precise_dtype):
    spec = model_spec(model)
    single, parallel, wrapped = single_and_parallel(spec, precise_dtype, devices, data_parallel)
    args, kwargs = spec.make_inputs(zoo_batch(devices), precise_dtype, devices.primary)
    with torch.no_grad():
        assert_gatherable(comparable(spec, precise_dtype, devices.primary)(*args, **kwargs))
    out = wrapped(*args, **kwargs)
    for leaf in (t for t in tensors_in(out) if t.is_floating_point()):
        assert leaf.requires_grad, "output detached from the graph"
        assert leaf.grad_fn is not None, "output is a leaf, not the result of the replicas"
    spec.loss(out).backward()
    spec.loss(single(*args, **kwargs)).backward()
    for (name, p), (_, q) in zip(parallel.named_parameters(), single.named_parameters()):
        assert (p.grad is None) == (q.grad is None), f"{name}: gradient presence differs"
        if q.grad is not None:
            assert_close(p.grad, q.grad, device_kind=devices.kind, what=f"gradient of {name}")
