"""Copy and collective bandwidth of every GPU and every link, against the node profile.

Each copy must also deliver exactly the bytes sent. Figures: GB/s (1e9 bytes/s); a copy
within a GPU counts bytes read plus bytes written; host, peer and collective figures are one
direction. Sizes, repeats and definitions: ``harness.perf``.
"""

import pytest

from harness.perf import bandwidth
from harness.perf.collective import allreduce_on_rank


@pytest.mark.required_check("performance.d2d_copy_bandwidth")
def test_copy_within_a_gpu(gpu_device, report_metric):
    result = bandwidth.device_copy(gpu_device)
    assert result.corruption is None, result.corruption
    report_metric("d2d_copy_bandwidth", result.bandwidth)


@pytest.mark.required_check("performance.h2d_pinned_bandwidth")
def test_pinned_host_to_gpu(gpu_device, report_metric):
    result = bandwidth.host_to_device(gpu_device)
    assert result.corruption is None, result.corruption
    report_metric("h2d_pinned_bandwidth", result.bandwidth)


@pytest.mark.required_check("performance.d2h_pinned_bandwidth")
def test_gpu_to_pinned_host(gpu_device, report_metric):
    result = bandwidth.device_to_host(gpu_device)
    assert result.corruption is None, result.corruption
    report_metric("d2h_pinned_bandwidth", result.bandwidth)


@pytest.mark.required_check("performance.p2p_bandwidth")
def test_peer_to_peer(gpu_pair, report_metric):
    source, destination = gpu_pair
    result = bandwidth.peer_copy(source, destination)
    assert result.corruption is None, result.corruption
    report_metric("p2p_bandwidth", result.bandwidth)


@pytest.mark.required_check("performance.allreduce_busbw")
def test_allreduce_bus_bandwidth(gpu_world, on_ranks, report_metric):
    ranks = on_ranks(allreduce_on_rank, gpu_world, backend="nccl")
    problems = [rank.problem for rank in ranks if rank.problem]
    assert not problems, "\n".join(problems)
    report_metric("allreduce_busbw", ranks[0].busbw)
