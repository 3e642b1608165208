"""Timing: warm-up runs excluded, median of the repeats, setup untimed; with an injected clock."""

import pytest

from harness.perf.measurement import Measurement
from harness.perf.timing import Timing, measure, wall_timer


class FakeClock:
    """A clock that only the operation under test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def operation_taking(clock: FakeClock, durations: list[float]):
    calls = iter(durations)

    def run() -> None:
        clock.now += next(calls)

    return run


def test_warm_up_runs_are_not_timed_and_the_median_is_reported():
    clock = FakeClock()
    # Two slow first runs (compilation, allocation), then timed runs.
    operation = operation_taking(clock, [50.0, 20.0, 3.0, 1.0, 2.0, 9.0, 2.0])
    timing = measure(operation, wall_timer(clock), warmup=2, repeats=5)
    assert timing.samples == (3.0, 1.0, 2.0, 9.0, 2.0)
    assert timing.median == 2.0
    assert (timing.warmup, timing.repeats) == (2, 5)


def test_median_of_an_even_number_of_repeats_is_the_mean_of_the_middle_two():
    assert Timing((4.0, 1.0, 3.0, 2.0), warmup=0).median == 2.5


def test_setup_runs_before_every_run_and_is_not_timed():
    clock = FakeClock()
    events = []

    def setup() -> None:
        events.append("setup")
        clock.now += 100.0

    def operation() -> None:
        events.append("run")
        clock.now += 1.0

    timing = measure(operation, wall_timer(clock), warmup=1, repeats=2, setup=setup)
    assert events == ["setup", "run"] * 3
    assert timing.samples == (1.0, 1.0)


@pytest.mark.parametrize(("warmup", "repeats"), [(-1, 3), (0, 0)])
def test_nonsense_counts_are_refused(warmup, repeats):
    with pytest.raises(ValueError, match="warmup >= 0 and repeats >= 1"):
        measure(lambda: None, wall_timer(), warmup=warmup, repeats=repeats)


def test_the_wall_timer_times_real_work():
    timing = measure(lambda: sum(range(10_000)), wall_timer(), warmup=1, repeats=3)
    assert all(sample > 0 for sample in timing.samples)


def test_a_measurement_reports_how_it_was_timed():
    measurement = Measurement(
        4100.0, "GB/s", Timing((0.25e-3, 0.5e-3, 0.3e-3), warmup=3), (("size", "512 MiB"),)
    )
    assert measurement.properties("d2d_copy_bandwidth") == [
        ("d2d_copy_bandwidth.median_time", "0.3 ms"),
        ("d2d_copy_bandwidth.repeats", "3"),
        ("d2d_copy_bandwidth.warmup", "3"),
        ("d2d_copy_bandwidth.size", "512 MiB"),
    ]
