"""Copy and collective bandwidth of every GPU and every link, against the node profile.

Each copy must also deliver exactly the bytes sent. Figures: GB/s (1e9 bytes/s); a copy
within a GPU counts bytes read plus bytes written; host, peer and collective figures are one
direction. Sizes, repeats and definitions: ``harness.perf``.
"""

import pytest

from harness.checks import Check
from harness.perf import bandwidth
from harness.perf.collective import allreduce_on_rank


@pytest.mark.required_check(Check.PERFORMANCE_D2D_COPY_BANDWIDTH)
def test_copy_within_a_gpu(gpu, figures):
    result = bandwidth.device_copy(gpu)
    assert result.corruption is None, result.corruption
    figures.record("d2d_copy_bandwidth", result.bandwidth)


@pytest.mark.required_check(Check.PERFORMANCE_H2D_PINNED_BANDWIDTH)
def test_pinned_host_to_gpu(gpu, figures):
    result = bandwidth.host_to_device(gpu)
    assert result.corruption is None, result.corruption
    figures.record("h2d_pinned_bandwidth", result.bandwidth)


@pytest.mark.required_check(Check.PERFORMANCE_D2H_PINNED_BANDWIDTH)
def test_gpu_to_pinned_host(gpu, figures):
    result = bandwidth.device_to_host(gpu)
    assert result.corruption is None, result.corruption
    figures.record("d2h_pinned_bandwidth", result.bandwidth)


@pytest.mark.required_check(Check.PERFORMANCE_P2P_BANDWIDTH)
def test_peer_to_peer(gpu_pair, figures):
    source, destination = gpu_pair
    result = bandwidth.peer_copy(source, destination)
    assert result.corruption is None, result.corruption
    figures.record("p2p_bandwidth", result.bandwidth)


@pytest.mark.required_check(Check.PERFORMANCE_ALLREDUCE_BUSBW)
def test_allreduce_bus_bandwidth(gpu_world, on_ranks, device_labels, figures):
    ranks = on_ranks(allreduce_on_rank, gpu_world, backend="nccl", labels=device_labels)
    problems = [rank.problem for rank in ranks if rank.problem]
    assert not problems, "\n".join(problems)
    figures.record("allreduce_busbw", ranks[0].busbw)
