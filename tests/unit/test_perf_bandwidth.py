"""Copy measurements, run for real on CPU tensors: the pattern, the byte check, the figures."""

import types

import pytest
import torch

from harness.gpus import Gpu
from harness.perf import bandwidth, pattern

CPU = torch.device("cpu")
NBYTES = 4 * 2**20


def fixed_timer(seconds: float):
    """A timer that runs the operation and says it took ``seconds``."""

    def run(operation) -> float:
        operation()
        return seconds

    return run


def test_the_pattern_has_no_zero_word_and_depends_on_the_seed():
    words = pattern.pattern(NBYTES, 7, CPU)
    assert words.numel() == NBYTES // 4
    assert bool((words != 0).all())
    assert bool((words & 1).all())  # odd everywhere
    assert torch.equal(words, pattern.pattern(NBYTES, 7, CPU))
    assert bool((words != pattern.pattern(NBYTES, 9, CPU)).all())
    assert len(torch.unique(words)) > 0.99 * words.numel()  # not a repeated short motif


def test_the_pattern_is_the_same_whatever_the_chunking(monkeypatch):
    whole = pattern.pattern(NBYTES, 3, CPU)
    monkeypatch.setattr(pattern, "CHUNK_WORDS", 1000)
    assert torch.equal(pattern.pattern(NBYTES, 3, CPU), whole)


def test_a_mismatch_is_counted_and_located(monkeypatch):
    monkeypatch.setattr(pattern, "CHUNK_WORDS", 1000)  # the damage spans chunks
    words = pattern.pattern(NBYTES, 3, CPU)
    assert pattern.find_mismatch(words, 3) is None
    words[2500:2510] = 0
    words[-1] ^= 1 << 20
    mismatch = pattern.find_mismatch(words, 3)
    assert (mismatch.count, mismatch.first, mismatch.total) == (11, 2500, NBYTES // 4)
    assert mismatch.describe() == (
        f"11 of {NBYTES // 4} 4-byte words differ from what was sent, the first at byte offset "
        "10000"
    )


def test_a_pattern_buffer_is_one_dimensional_int32():
    with pytest.raises(ValueError, match=r"1-D torch\.int32"):
        pattern.fill_pattern(torch.empty(4, 4, dtype=torch.int32), 1)
    with pytest.raises(ValueError, match="multiple of 4 bytes"):
        pattern.words(6)


@pytest.mark.parametrize(
    ("measure", "counted"),
    [
        (lambda: bandwidth.device_copy(CPU, NBYTES, warmup=1, repeats=3), 2 * NBYTES),
        (lambda: bandwidth.host_to_device(CPU, NBYTES, warmup=1, repeats=3), NBYTES),
        (lambda: bandwidth.device_to_host(CPU, NBYTES, warmup=1, repeats=3), NBYTES),
        (lambda: bandwidth.peer_copy(CPU, CPU, NBYTES, warmup=1, repeats=3), NBYTES),
    ],
    ids=["device_copy", "host_to_device", "device_to_host", "peer_copy"],
)
def test_copies_count_their_bytes_and_arrive_intact(monkeypatch, measure, counted):
    monkeypatch.setattr(bandwidth, "timer_for", lambda device: fixed_timer(0.5e-3))
    result = measure()
    assert result.corruption is None
    assert result.bandwidth.unit == "GB/s"
    assert result.bandwidth.value == pytest.approx(counted / 0.5e-3 / 1e9)
    assert result.bandwidth.timing.samples == (0.5e-3,) * 3
    assert ("size", "4 MiB") in result.bandwidth.details


def test_a_copy_is_timed_for_real_on_the_cpu():
    result = bandwidth.device_copy(CPU, NBYTES, warmup=1, repeats=3)
    assert result.corruption is None
    assert result.bandwidth.value > 0
    assert ("counted", "read + write") in result.bandwidth.details


def corrupting_copy(destination: torch.Tensor, source: torch.Tensor) -> None:
    destination.copy_(source)
    destination[12345] ^= 1 << 7  # one flipped bit


class Labelled(Gpu):
    """A GPU identity measured on the CPU: how messages name the ends of a link."""

    @property
    def device(self) -> torch.device:
        return CPU


def test_a_corrupting_peer_link_is_caught_and_the_pair_named():
    source, destination = (Labelled(f"GPU-{i}", "H100", f"bus{i}", i, i) for i in (3, 5))
    result = bandwidth.peer_copy(
        source, destination, NBYTES, copy=corrupting_copy, warmup=1, repeats=2
    )
    assert result.corruption == (
        f"{source.label} -> {destination.label}: 1 of {NBYTES // 4} 4-byte words differ from "
        f"what was sent, the first at byte offset {12345 * 4}"
    )


@pytest.mark.parametrize(
    "copy_function",
    [bandwidth.device_copy, bandwidth.host_to_device, bandwidth.device_to_host],
)
def test_a_corrupting_copy_fails_every_measurement(copy_function):
    result = copy_function(CPU, NBYTES, copy=corrupting_copy, warmup=0, repeats=1)
    assert "1 of" in result.corruption


def test_a_copy_that_moves_nothing_is_caught():
    result = bandwidth.peer_copy(CPU, CPU, NBYTES, copy=lambda dst, src: None, warmup=0, repeats=1)
    assert result.corruption == (
        f"cpu -> cpu: {NBYTES // 4} of {NBYTES // 4} 4-byte words differ from what was sent, "
        "the first at byte offset 0"
    )


def test_the_source_is_never_zero_filled():
    seen = []

    def spy(destination: torch.Tensor, source: torch.Tensor) -> None:
        seen.append(bool((source != 0).all()))
        destination.copy_(source)

    bandwidth.device_copy(CPU, NBYTES, copy=spy, warmup=1, repeats=1)
    assert seen == [True, True]


def test_allreduce_on_rank_checks_the_sum_it_received(monkeypatch):
    # Rank 0 of a two-rank world, the other rank simulated: its part is twice rank 0's, so
    # the true sum is three times what rank 0 sends; the timings are averaged over two ranks.
    import torch.distributed as dist

    from harness.perf.collective import allreduce_on_rank

    def all_reduce(tensor):
        tensor.mul_(2 if tensor.dtype == torch.float64 else 3)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    env = types.SimpleNamespace(device=torch.device("cpu"), rank=0, world_size=2, backend="gloo")
    result = allreduce_on_rank(env, nbytes=4096, warmup=1, repeats=3)
    assert (result.wrong_elements, result.elements, result.problem) == (0, 1024, None)
    assert result.busbw.value > 0
    assert result.busbw.timing.repeats == 3

    monkeypatch.setattr(dist, "all_reduce", lambda tensor: tensor.mul_(2))  # a wrong sum
    result = allreduce_on_rank(env, nbytes=4096, warmup=1, repeats=3)
    assert result.wrong_elements == 1024
    assert result.problem.startswith("rank 0 on cpu: 1024 of 1024 elements")
