"""Inputs tiled from a seed batch: what ``make_inputs`` gives in all but values, for every model
of both zoos; where the batch dimension is not the first; and the inputs left to
``make_inputs``."""

from types import SimpleNamespace

import pytest
import torch
from torch.utils._pytree import tree_leaves, tree_map, tree_structure

from harness.memory.estimate import LiveBytes
from harness.memory.fake import FakeMemory
from harness.memory.inputs import SEED_BATCH, TiledInputs
from harness.memory.steps import TrainingStep
from harness.models import MEMORY_ZOO, ZOO, ModelSpec

CPU = torch.device("cpu")
META = torch.device("meta")
F32 = torch.float32
MODELS = [
    pytest.param(spec, id=f"{zoo}-{spec.name}")
    for zoo, specs in {"zoo": ZOO, "memory_zoo": MEMORY_ZOO}.items()
    for spec in specs.values()
]


def layout(inputs):
    """Everything but the values: structure, and per tensor what it holds and how."""
    return tree_structure(inputs), tree_map(
        lambda t: (
            (
                tuple(t.shape),
                t.dtype,
                t.device,
                t.requires_grad,
                t.is_contiguous(),
                t.nbytes,
                t.untyped_storage().nbytes(),
            )
            if isinstance(t, torch.Tensor)
            else t
        ),
        inputs,
    )


def tensors(inputs) -> list[torch.Tensor]:
    return [leaf for leaf in tree_leaves(inputs) if isinstance(leaf, torch.Tensor)]


def storage_addresses(inputs) -> list[int]:
    return [t.untyped_storage().data_ptr() for t in tensors(inputs)]


@pytest.mark.parametrize("batch", [5, 37])
@pytest.mark.parametrize("spec", MODELS)
def test_tiled_inputs_hold_the_bytes_make_inputs_holds(spec, batch):
    tiled = TiledInputs(spec, F32, CPU)
    assert tiled.reason is None
    with LiveBytes(CPU) as counter:
        inputs = tiled(batch)
    expected = spec.make_inputs(batch, F32, CPU)
    assert layout(inputs) == layout(expected)
    # Every byte was allocated while building, in storages of exactly the inputs' size: no
    # view of the seed, no broadcast, no temporary.
    nbytes = sum(t.untyped_storage().nbytes() for t in tensors(expected))
    assert counter.live == counter.peak == nbytes
    addresses = storage_addresses(inputs) + storage_addresses(tiled(batch))
    assert len(set(addresses)) == len(addresses)


@pytest.mark.parametrize("spec", [pytest.param(spec, id=spec.name) for spec in ZOO.values()])
def test_tiled_rows_repeat_the_seed_batch(spec):
    seed = tensors(spec.make_inputs(SEED_BATCH, F32, CPU))
    rows = torch.arange(37) % SEED_BATCH
    tiled = tensors(TiledInputs(spec, F32, CPU)(37))
    assert all(torch.equal(t, s[rows]) for t, s in zip(tiled, seed, strict=True))


def spec_of(inputs) -> ModelSpec:
    return ModelSpec("custom", lambda: torch.nn.Identity(), inputs)


def normal(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def test_a_batch_dimension_other_than_the_first_is_tiled_along_it():
    def sequence_first(batch, dtype, gen):
        return (normal(4, batch, 3, gen=gen),), {"scale": 2.0}

    spec = spec_of(sequence_first)
    tiled = TiledInputs(spec, F32, CPU)
    (x,), kwargs = tiled(37)
    (seed,), _ = spec.make_inputs(SEED_BATCH, F32, CPU)
    assert tiled.reason is None
    assert layout(((x,), kwargs)) == layout(spec.make_inputs(37, F32, CPU))
    assert torch.equal(x, seed[:, torch.arange(37) % SEED_BATCH])


def test_an_input_that_requires_grad_is_a_leaf_that_requires_grad():
    spec = spec_of(lambda batch, dtype, gen: ((normal(batch, 3, gen=gen).requires_grad_(),), {}))
    (x,), _ = TiledInputs(spec, F32, CPU)(37)
    assert x.requires_grad
    assert x.is_leaf


UNTILEABLE = {
    "flattened batch": lambda batch, dtype, gen: ((normal(batch * 4, 3, gen=gen),), {}),
    "no batch dimension": lambda b, dtype, gen: ((normal(b, 3, gen=gen), normal(3, gen=gen)), {}),
    "batch as a value": lambda batch, dtype, gen: ((normal(batch, 3, gen=gen),), {"rows": batch}),
    "transposed": lambda batch, dtype, gen: ((normal(3, batch, gen=gen).t(),), {}),
    "shared storage": lambda batch, dtype, gen: (lambda x: ((x, x), {}))(normal(batch, 3, gen=gen)),
    "structure": lambda batch, dtype, gen: (tuple(normal(3, gen=gen) for _ in range(batch)), {}),
}


@pytest.mark.parametrize("inputs", UNTILEABLE.values(), ids=UNTILEABLE.keys())
def test_inputs_that_cannot_be_tiled_come_from_make_inputs(inputs):
    spec = spec_of(inputs)
    tiled = TiledInputs(spec, F32, CPU)
    assert tiled.reason
    got, expected = tiled(37), spec.make_inputs(37, F32, CPU)
    assert layout(got) == layout(expected)
    assert all(torch.equal(a, b) for a, b in zip(tensors(got), tensors(expected), strict=True))


# The realistic zoo on the meta device (shapes, no compute), except the sparse embedding:
# SparseAdam coalesces its gradient, and coalescing has no meta kernel.
STEP_CASES = [
    *(pytest.param(spec, CPU, id=f"zoo-{spec.name}") for spec in ZOO.values()),
    *(
        pytest.param(spec, CPU if spec.sparse_grads else META, id=f"memory_zoo-{spec.name}")
        for spec in MEMORY_ZOO.values()
    ),
]


@pytest.mark.parametrize(("spec", "device"), STEP_CASES)
def test_a_training_step_runs_on_tiled_inputs(spec, device):
    step = TrainingStep(spec, device, FakeMemory(10**12))
    assert step.inputs.reason is None
    step(37)
    assert 37 in step.peaks
    assert all(p.grad is not None for p in step.model.parameters())


def test_the_step_draws_inputs_once_not_per_batch():
    calls = []

    def make_inputs(batch, dtype, device, seed=1):
        calls.append(batch)
        return ZOO["mlp"].make_inputs(batch, dtype, device, seed)

    mlp = ZOO["mlp"]
    counted = SimpleNamespace(name="mlp", make=mlp.make, make_inputs=make_inputs, loss=mlp.loss)
    step = TrainingStep(counted, CPU, FakeMemory(10**9))
    for batch in (1, 64, 37):
        step(batch)
    assert sorted(calls) == [1, SEED_BATCH]
    assert set(step.peaks) == {1, 64, 37}
