"""The largest-batch search against fake devices with a memory budget (``harness.memory.fake``):
exact answers for a linear footprint, and the noise real allocators add."""

import gc

import pytest
import torch

from harness.memory.device import QUICK_SEARCH_LIMIT, allocator_cap, memory_cap, search_cap
from harness.memory.fake import FakeMemory, FakeModel
from harness.memory.search import BATCH_CEILING, Trial, largest_batch, oom_trial

MIB = 2**20


def search(model: FakeModel, *, ceiling: int = BATCH_CEILING, retries: int = 1):
    return largest_batch(oom_trial(model, model.memory), ceiling=ceiling, retries=retries)


@pytest.mark.parametrize(
    ("budget", "per_sample", "fixed"),
    [
        (1000, 10, 0),
        (1000, 10, 5),
        (24 * 2**30, 3 * MIB + 17, 512 * MIB),
        (80 * 10**9, 123_457, 1),
        (2**20, 1, 0),  # the answer is far above the ceiling
        (64, 64, 0),  # exactly one sample
        (1 << 40, 1 << 24, (1 << 40) - (1 << 24) - 1),  # one sample, one byte short of two
    ],
)
def test_linear_footprint_gives_the_exact_answer(budget, per_sample, fixed):
    model = FakeModel(FakeMemory(budget), per_sample, fixed)
    result = search(model)
    assert result.batch == min(model.largest(budget), BATCH_CEILING)
    assert result.ceiling_reached == (model.largest(budget) >= BATCH_CEILING)
    # Grow and bisect: a logarithmic number of steps, not a scan.
    assert len(model.steps) <= 3 * 17 + 4


def test_even_batch_one_does_not_fit():
    model = FakeModel(FakeMemory(1000), per_sample=7, fixed=999)
    result = search(model)
    assert result.batch == 0
    assert result.first_failure == 1
    assert [t.batch for t in result.trials] == [1, 1]  # the failure was confirmed once


def test_under_a_cap_the_answer_is_the_cap_s_not_the_card_s():
    memory = FakeMemory(total=80 * 10**9, context=500 * MIB)
    model = FakeModel(memory, per_sample=MIB, fixed=100 * MIB)
    cap = allocator_cap(memory, 24 * 2**30)
    with memory_cap(memory, cap):
        result = search(model)
    assert result.batch == model.largest(24 * 2**30) == 24 * 1024 - 100
    assert memory.fraction() == 1.0  # the cap is lifted afterwards


def test_without_a_limit_the_cap_is_the_free_memory_less_the_library_headroom():
    memory = FakeMemory(total=16 * 2**30, context=2**30)
    held = memory.allocate(2**30)
    assert allocator_cap(memory, None) == 16 * 2**30 - 2**30 - 2**30
    with pytest.raises(ValueError, match=r"--memory-limit 15 GiB is more than this GPU can give"):
        allocator_cap(memory, 15 * 2**30)
    del held


def test_the_quick_search_emulates_a_small_card_unless_a_limit_is_given():
    memory = FakeMemory(total=141 * 10**9, context=2**30)
    assert search_cap(memory, None) == QUICK_SEARCH_LIMIT
    assert search_cap(memory, 100 * 2**30) == 100 * 2**30  # the thorough search
    small = FakeMemory(total=4 * 2**30, context=2**29)
    assert search_cap(small, None) == allocator_cap(small, None) < QUICK_SEARCH_LIMIT


def test_ceiling_is_respected_and_reported():
    model = FakeModel(FakeMemory(10**12), per_sample=1)
    result = search(model, ceiling=100)
    assert result.batch == 100
    assert result.ceiling_reached
    assert max(model.steps) == 100


class OneOffFailure(FakeModel):
    """Runs out of memory once at one batch that fits: another stream or process briefly
    held memory."""

    def __init__(self, *args, at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.at = at

    def __call__(self, batch: int) -> None:
        if batch == self.at:
            self.at = None
            self.steps.append(batch)
            raise torch.OutOfMemoryError("transient")
        super().__call__(batch)


def test_a_one_off_failure_does_not_shrink_the_answer():
    model = OneOffFailure(FakeMemory(10_000), per_sample=10, at=512)
    assert search(model).batch == 1000
    assert search(OneOffFailure(FakeMemory(10_000), per_sample=10, at=512), retries=0).batch < 1000


class LuckyOnce(FakeModel):
    """Fits once at a batch that does not really fit (what happened to be free), never again."""

    def __init__(self, *args, lucky: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.lucky = lucky

    def __call__(self, batch: int) -> None:
        if batch == self.lucky:
            self.lucky = None
            self.steps.append(batch)
            return
        super().__call__(batch)


def test_a_success_that_does_not_repeat_is_not_the_answer():
    # Budget for 700; batch 750 fits once by luck during the bisection (512..1024).
    model = LuckyOnce(FakeMemory(7000), per_sample=10, lucky=768)
    result = search(model)
    assert result.batch == 700
    assert Trial(768, True) in result.trials


class Fragmenting(FakeMemory):
    """An allocator whose cached blocks are split and cannot be returned by itself: only an
    explicit release (``empty_cache`` after the tensors are gone) gives them back."""

    def drop_cache(self) -> None:
        pass


def test_fragmentation_left_by_a_trial_does_not_decide_the_next():
    model = FakeModel(Fragmenting(10_000), per_sample=10)
    assert search(model).batch == 1000

    # Without releasing between trials the cache of the previous step takes the room.
    model = FakeModel(Fragmenting(10_000), per_sample=10)

    def fits_without_release(batch: int) -> bool:
        try:
            model(batch)
        except torch.OutOfMemoryError:
            return False
        return True

    assert largest_batch(fits_without_release, ceiling=BATCH_CEILING).batch < 1000


class Workspace(FakeModel):
    """A footprint that does not grow with the batch: at multiples of 64 an algorithm with a
    large workspace is chosen."""

    def footprint(self, batch: int) -> int:
        return super().footprint(batch) + (5000 if batch % 64 == 0 else 0)


def test_a_non_monotone_footprint_gives_a_boundary_that_fits():
    model = Workspace(FakeMemory(10_000), per_sample=10)
    result = search(model)
    fits = {t.batch: t.fits for t in result.trials}
    assert result.batch > 0
    assert model.footprint(result.batch) <= 10_000
    assert fits[result.batch] is True
    assert fits.get(result.batch + 1, False) is False
    assert result.batch + 1 in fits  # the boundary was seen, not assumed


def test_errors_other_than_out_of_memory_propagate():
    class Unlaunchable(FakeModel):
        def __call__(self, batch: int) -> None:
            if batch > 1000:
                raise RuntimeError("CUDA error: invalid configuration argument")
            super().__call__(batch)

    with pytest.raises(RuntimeError, match="invalid configuration"):
        search(Unlaunchable(FakeMemory(10**9), per_sample=1))


def test_every_trial_releases_the_cache():
    model = FakeModel(FakeMemory(10_000), per_sample=10)
    result = search(model)
    assert model.memory.releases == len(result.trials)
    assert model.memory.allocated() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="ceiling"):
        largest_batch(lambda b: True, ceiling=0)


class FailsHalfway(FakeModel):
    """Holds its first half while the second runs out of memory, two frames down."""

    def __call__(self, batch: int) -> None:
        first_half = self.memory.allocate(self.footprint(batch) // 2)
        self.second_half(batch)
        del first_half

    def second_half(self, batch: int) -> None:
        self.memory.allocate(self.footprint(batch) - self.footprint(batch) // 2)


def test_a_failed_step_leaves_nothing_behind_without_garbage_collection():
    model = FailsHalfway(FakeMemory(10_000), per_sample=10)
    fits = oom_trial(model, model.memory)
    gc.disable()
    try:
        assert fits(2000) is False
        assert model.memory.allocated() == 0
    finally:
        gc.enable()


def test_a_failure_that_leaves_memory_in_a_cycle_is_collected():
    class Cyclic(FakeModel):
        def __call__(self, batch: int) -> None:
            node = {"block": self.memory.allocate(100)}
            node["self"] = node  # only the garbage collector frees this
            super().__call__(batch)

    model = Cyclic(FakeMemory(10_000), per_sample=10)
    assert oom_trial(model, model.memory)(2000) is False
    assert model.memory.allocated() == 0
