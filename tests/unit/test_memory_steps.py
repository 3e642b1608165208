"""The training step the memory checks run, on the CPU for every zoo model, and GPU labels."""

import pytest
import torch

from harness.devices import parse_devices
from harness.impl import resolve_dp_impl
from harness.memory.fake import FakeMemory
from harness.memory.search import largest_batch, oom_trial
from harness.memory.steps import TrainingStep
from harness.models import ZOO
from harness.perf.gpus import distinct_gpus

CPU = torch.device("cpu")
MODELS = [pytest.param(spec, id=spec.name) for spec in ZOO.values()]


@pytest.mark.parametrize("wrapped", [False, True], ids=["module", "data_parallel"])
@pytest.mark.parametrize("spec", MODELS)
def test_a_step_trains_and_keeps_nothing_but_gradients(spec, wrapped):
    devices = parse_devices("cpu:2")
    dp = resolve_dp_impl("reference", devices)
    wrap = (lambda m: dp.factory(m, devices.device_ids, None, 0)) if wrapped else None
    memory = FakeMemory(10**9)
    step = TrainingStep(spec, CPU, memory, wrap=wrap)
    before = {name: p.detach().clone() for name, p in step.model.named_parameters()}
    step(6)
    step(6)
    assert set(step.peaks) == {6}
    changed = [n for n, p in step.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "the optimizer step changed no parameter"
    assert all(p.grad is not None for p in step.model.parameters())


def test_the_search_drives_a_real_step_on_a_fake_budget():
    memory = FakeMemory(total=1000 * 256)
    step = TrainingStep(ZOO["mlp"], CPU, memory)

    def step_with_footprint(batch: int) -> None:
        activations = memory.allocate(256 * batch)  # what the step would need on a GPU
        step(batch)
        del activations

    result = largest_batch(oom_trial(step_with_footprint, memory), ceiling=4096)
    assert result.batch == 1000
    assert result.batch in step.peaks


def test_cpu_devices_have_no_gpus():
    assert distinct_gpus(parse_devices("cpu:4")) == []
