"""The figures' definitions and the problem sizes."""

import pytest
import torch

from harness.perf import sizes
from harness.perf.formulas import allreduce_bandwidths, bandwidth_gbs, matmul_flops, tflops


def test_bandwidth_is_decimal_gigabytes_per_second():
    assert bandwidth_gbs(4_200_000_000, 1.0) == pytest.approx(4.2)
    assert bandwidth_gbs(2 * 512 * 2**20, 0.25e-3) == pytest.approx(4294.967296)


@pytest.mark.parametrize(("world", "factor"), [(2, 1.0), (8, 1.75)])
def test_allreduce_bus_bandwidth_follows_nccl_tests(world, factor):
    algbw, busbw = allreduce_bandwidths(1_000_000_000, 0.01, world)
    assert algbw == pytest.approx(100.0)  # S / t
    assert busbw == pytest.approx(100.0 * factor)  # algbw * 2(n-1)/n


def test_allreduce_bus_bandwidth_needs_two_ranks():
    with pytest.raises(ValueError, match="at least 2 ranks"):
        allreduce_bandwidths(1_000_000, 0.01, 1)


def test_matmul_tflops_counts_a_multiply_and_an_add_per_term():
    assert matmul_flops(2, 3, 4) == 48
    assert matmul_flops(8192, 8192, 8192) == 2 * 8192**3
    assert tflops(matmul_flops(8192, 8192, 8192), 1e-3) == pytest.approx(1099.511627776)


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_a_figure_needs_a_positive_duration(seconds):
    with pytest.raises(ValueError, match="must be > 0 s"):
        bandwidth_gbs(1, seconds)
    with pytest.raises(ValueError, match="must be > 0 s"):
        tflops(1, seconds)


@pytest.mark.parametrize(
    "nbytes",
    [
        sizes.COPY_BYTES,
        sizes.HOST_COPY_BYTES,
        sizes.ALLREDUCE_BYTES,
        sizes.MATMUL_SIZE**2 * torch.bfloat16.itemsize,
    ],
    ids=["copy", "host_copy", "allreduce", "bf16_matmul_operand"],
)
def test_every_buffer_is_several_times_larger_than_the_l2_cache(nbytes):
    assert nbytes >= 2 * sizes.L2_CACHE_BYTES
    assert sizes.L2_CACHE_BYTES >= 50 * 10**6  # H100 and H200: 50 MB


def test_sizes_read_as_binary_units():
    assert sizes.describe_bytes(512 * 2**20) == "512 MiB"
    assert sizes.describe_bytes(3 * 2**29) == "1.5 GiB"
    assert sizes.describe_bytes(100) == "100 B"
