"""Batch sizes that do not divide evenly: DataParallel must still equal one device.

Claims shared by ``torch.nn.DataParallel`` and the reference:

- batches of 1, primes, sizes below the device count and sizes that leave a
  short last chunk give the single-device outputs, parameter gradients and
  input gradients, for every model of the zoo (BatchNorm models in eval mode);
- an empty batch gives an empty output shaped like the module's own output
  on an empty batch; every replica receives an empty chunk;
- BatchNorm in training with a chunk of one row raises the documented
  ValueError, type and message kept and the failing replica named (the
  reference names it in ``__notes__``, torch in the message "in replica N");
  eval mode, or chunks of two rows or more, work.
"""

import pytest
import torch
from torch import nn

from harness.model_specs import model_spec, traits
from harness.probes import (
    Probe,
    chunk_bounds,
    chunk_sizes,
    labelled,
    names_replica,
    replica_report,
    tensors_in,
)
from harness.tolerances import assert_close
from harness.training import assert_gatherable, comparable

# 1; below the device count (cpu:4); 5 on 4 devices uses 3 replicas (2, 2, 1); primes;
# 13 and 31 leave a short last chunk.
ODD_BATCHES = [1, 3, 5, 7, 13, 31]

BATCHNORM_ERROR = "Expected more than 1 value per channel when training"


def build(spec, dtype, devices):
    model = comparable(spec, dtype, devices.primary)
    return model.eval() if traits(spec).batch_dependent else model


def float_inputs_requiring_grad(args, kwargs) -> list[torch.Tensor]:
    """The floating-point input tensors, set to require grad."""
    return [t.requires_grad_() for t in tensors_in((args, kwargs)) if t.is_floating_point()]


@pytest.mark.parametrize("batch", ODD_BATCHES, ids=lambda b: f"batch={b}")
def test_odd_batch_gives_the_single_device_outputs_and_gradients(
    data_parallel, devices, precise_dtype, batch, model
):
    spec = model_spec(model)
    kind = devices.kind
    single, parallel = build(spec, precise_dtype, devices), build(spec, precise_dtype, devices)
    wrapped = data_parallel(parallel)

    results = []
    for module in (single, wrapped):
        args, kwargs = spec.make_inputs(batch, precise_dtype, devices.primary)
        inputs = float_inputs_requiring_grad(args, kwargs)
        out = module(*args, **kwargs)
        if module is single:
            assert_gatherable(out)
        spec.loss(out).backward()
        results.append((out, inputs))
    (expected, expected_inputs), (actual, actual_inputs) = results

    assert_close(actual, expected, device_kind=kind, what=f"{spec.name} output, batch {batch}")
    for i, (a, e) in enumerate(zip(actual_inputs, expected_inputs)):
        assert_close(a.grad, e.grad, device_kind=kind, what=f"gradient of input {i}")
    for (name, p), (_, q) in zip(parallel.named_parameters(), single.named_parameters()):
        assert (p.grad is None) == (q.grad is None), f"{name}: gradient presence differs"
        if q.grad is not None:
            assert_close(p.grad, q.grad, device_kind=kind, what=f"gradient of {name}")


@pytest.mark.zoo("mlp", "nested_outputs", "sparse_embedding")
def test_empty_batch_gives_the_modules_own_empty_output(
    data_parallel, devices, precise_dtype, model
):
    spec = model_spec(model)
    single, parallel = build(spec, precise_dtype, devices), build(spec, precise_dtype, devices)
    args, kwargs = spec.make_inputs(0, precise_dtype, devices.primary)
    with torch.no_grad():
        try:
            expected = single(*args, **kwargs)
        except Exception as error:  # the model's own limit, not data parallelism's
            pytest.skip(
                f"not applicable: {spec.name} itself fails on an empty batch "
                f"({type(error).__name__}: {' '.join(str(error).split())[:200]})"
            )
        actual = data_parallel(parallel)(*args, **kwargs)
    # assert_close checks shapes, so every leaf must be (0, ...) like the module's.
    assert_close(
        actual, expected, device_kind=devices.kind, what=f"{spec.name} output, empty batch"
    )


def test_empty_batch_reaches_every_replica_as_an_empty_chunk(data_parallel, devices, replicas):
    x = labelled((0, 5), device=devices.primary)
    probe = Probe()
    (out,) = data_parallel(probe, device_ids=devices.device_ids[:replicas])(x)
    assert [tuple(c.tensors()[0].shape) for c in probe.calls] == [(0, 5)] * replicas
    assert out.shape == (0, 5)


def batchnorm_model(devices) -> nn.Module:
    """BatchNorm1d sees one value per channel for a one-row chunk.

    (The zoo's cnn_bn does not: BatchNorm2d pools over 6x6 pixels, so a
    one-image chunk still has 36 values per channel.)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh())
    return model.to(devices.primary)


def last_chunk_of_one(replicas: int) -> int:
    """A batch whose last torch.chunk has one row: 2, 2, ..., 2, 1."""
    return 2 * replicas - 1


def test_batchnorm_chunk_of_one_in_training_raises_naming_the_replica(data_parallel, devices):
    batch = last_chunk_of_one(devices.count)
    failing = chunk_sizes(batch, devices.count).index(1)
    x = labelled((batch, 6), device=devices.primary)
    with pytest.raises(ValueError, match=BATCHNORM_ERROR) as caught:
        data_parallel(batchnorm_model(devices).train())(x)
    if devices.count > 1:
        assert names_replica(caught.value, failing), (
            f"the error does not name replica {failing}:\n{replica_report(caught.value)}"
        )


def test_batchnorm_with_a_chunk_of_one_works_in_eval_mode(data_parallel, devices):
    batch = last_chunk_of_one(devices.count)
    x = labelled((batch, 6), dtype=torch.float64, device=devices.primary)
    model = batchnorm_model(devices).double()
    # Non-trivial running statistics, as after training.
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        actual = data_parallel(model)(x)
    assert_close(actual, expected, device_kind=devices.kind, what="eval-mode BatchNorm output")


def test_batchnorm_in_training_normalises_each_chunk_of_two_or_more_rows_on_its_own(
    data_parallel, devices, replicas
):
    batch = 3 * replicas - 1  # chunks of 3, ..., 3, 2
    x = labelled((batch, 6), dtype=torch.float64, device=devices.primary)
    reference = batchnorm_model(devices).double().train()
    with torch.no_grad():
        expected = torch.cat(
            [reference(x.narrow(0, *bounds)) for bounds in chunk_bounds(batch, replicas)]
        )
        wrapped = data_parallel(
            batchnorm_model(devices).double().train(), device_ids=devices.device_ids[:replicas]
        )
        actual = wrapped(x)
    assert_close(actual, expected, device_kind=devices.kind, what="per-chunk BatchNorm output")
