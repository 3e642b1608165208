"""Claims: the model itself works under data parallelism, or says why not.

For each model (``--model``, else the zoo), things only the model decides:

- its outputs can be gathered: tensors, None, and dicts, lists, tuples and namedtuples of them
  (a Hugging Face cache object or a dataclass cannot; the failure names the output and the
  remedy);
- its forward keeps no state in Python attributes, which replicas would lose;
- with dropout off (as the equivalence claims compare it), its training-mode forward is
  deterministic: nothing else in it draws random numbers;
- parameters it shares between modules (tied embeddings) stay one parameter in every replica;
- integer inputs (token ids) reach every replica as integers.

A claim that does not apply to a model (tied weights for a model that shares none) is skipped
saying "not applicable" and why.
"""

import pytest
import torch

from harness.model_checks import (
    leaves,
    randomness_problem,
    state_problem,
)
from harness.model_specs import model_spec, traits
from harness.training import assert_gatherable, comparable


def batch_for(devices) -> int:
    """Two rows per replica: every replica gets a chunk, BatchNorm has more than one row."""
    return 2 * devices.count


def test_outputs_can_be_gathered(model, devices, precise_dtype):
    spec = model_spec(model)
    module = comparable(spec, precise_dtype, devices.primary)
    args, kwargs = spec.make_inputs(batch_for(devices), precise_dtype, devices.primary)
    with torch.no_grad():
        assert_gatherable(module(*args, **kwargs))


def test_forward_keeps_no_state_in_python_attributes(model, devices, precise_dtype):
    spec = model_spec(model)
    module = comparable(spec, precise_dtype, devices.primary).train()
    args, kwargs = spec.make_inputs(batch_for(devices), precise_dtype, devices.primary)
    with torch.no_grad():
        problem = state_problem(module, args, kwargs)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def test_training_forward_is_deterministic_with_dropout_off(model, devices, precise_dtype):
    spec = model_spec(model)
    module = comparable(spec, precise_dtype, devices.primary).train()
    args, kwargs = spec.make_inputs(batch_for(devices), precise_dtype, devices.primary)
    with torch.no_grad():
        first, second = module(*args, **kwargs), module(*args, **kwargs)
    problem = randomness_problem(first, second)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def observe_replicas(module, record) -> None:
    """Call ``record(replica, args, kwargs)`` in every replica's forward: a pre-hook lives in the
    module's ``__dict__``, which replicas copy, so it runs in each of them."""
    module.register_forward_pre_hook(
        lambda replica, args, kwargs: record(replica, args, kwargs), with_kwargs=True
    )


def test_tied_weights_stay_tied_in_every_replica(model, devices, precise_dtype, data_parallel):
    spec = model_spec(model)
    groups = traits(spec).tied
    if not groups:
        pytest.skip(f"not applicable: {spec.name} shares no parameter between modules")
    if devices.count < 2:
        pytest.skip(f"needs several replicas; --devices is {devices.label}")
    module = comparable(spec, precise_dtype, devices.primary)
    seen: list[list[tuple[str, ...]]] = []

    def record(replica, args, kwargs):
        untied = []
        for group in groups:
            tensors = [_tensor(replica, name) for name in group]
            if any(t is not tensors[0] for t in tensors[1:]):
                untied.append(group)
        seen.append(untied)

    args, kwargs = spec.make_inputs(batch_for(devices), precise_dtype, devices.primary)
    with torch.no_grad():
        assert_gatherable(module(*args, **kwargs))
        observe_replicas(module, record)
        data_parallel(module)(*args, **kwargs)
    assert len(seen) > 1, "the implementation did not run several replicas"
    broken = {", ".join(group) for untied in seen for group in untied}
    assert not broken, (
        f"in {sum(bool(u) for u in seen)} of {len(seen)} replicas these parameters are no longer "
        f"one tensor: {'; '.join(sorted(broken))} (a tied embedding must stay tied, so that its "
        "gradient is the sum of both uses)"
    )


def _tensor(module, name: str) -> torch.Tensor:
    owner, _, attribute = name.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, attribute)


def test_integer_inputs_reach_every_replica_as_integers(
    model, devices, precise_dtype, data_parallel
):
    spec = model_spec(model)
    args, kwargs = spec.make_inputs(batch_for(devices), precise_dtype, devices.primary)
    given = [leaf.dtype for _, leaf in leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
    if not any(not (dtype.is_floating_point or dtype.is_complex) for dtype in given):
        pytest.skip(f"not applicable: {spec.name} takes no integer input")
    module = comparable(spec, precise_dtype, devices.primary)
    with torch.no_grad():
        assert_gatherable(module(*args, **kwargs))
    received: list[list[torch.dtype]] = []
    observe_replicas(
        module,
        lambda replica, a, k: received.append(
            [leaf.dtype for _, leaf in leaves((a, k)) if isinstance(leaf, torch.Tensor)]
        ),
    )
    with torch.no_grad():
        data_parallel(module)(*args, **kwargs)
    for replica, dtypes in enumerate(received):
        assert dtypes == given, (
            f"replica {replica} received inputs of dtypes {dtypes}, the caller passed {given}: "
            "integer inputs (token ids) must arrive as integers"
        )
