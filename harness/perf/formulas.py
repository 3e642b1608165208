"""The figures' definitions. Decimal units, as nccl-tests and GPU data sheets use them:
1 GB/s = 1e9 bytes per second, 1 TFLOP/s = 1e12 floating-point operations per second."""

GB = 1e9
TFLOP = 1e12


def bandwidth_gbs(nbytes: int, seconds: float) -> float:
    """GB/s for ``nbytes`` moved in ``seconds``. A device-to-device copy of S bytes moves
    2S (S read, S written), as the copy bandwidth references count it."""
    _positive(seconds)
    return nbytes / seconds / GB


def matmul_flops(m: int, n: int, k: int) -> int:
    """Floating-point operations of an (m x k) @ (k x n) product: a multiply and an add per
    term of each of the m*n dot products of length k."""
    return 2 * m * n * k


def tflops(flops: int, seconds: float) -> float:
    _positive(seconds)
    return flops / seconds / TFLOP


def allreduce_bandwidths(size_bytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """nccl-tests' (algbw, busbw) in GB/s for an all-reduce of ``size_bytes`` per rank.

    algbw = S / t. busbw = algbw * 2(n-1)/n: a ring all-reduce sends and receives
    2(n-1)/n * S bytes per rank, so busbw is the per-link rate, comparable across world
    sizes and with the hardware's link bandwidth.
    """
    if world_size < 2:
        raise ValueError(f"an all-reduce bus bandwidth needs at least 2 ranks, got {world_size}")
    algbw = bandwidth_gbs(size_bytes, seconds)
    return algbw, algbw * 2 * (world_size - 1) / world_size


def _positive(seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"a duration must be > 0 s, got {seconds!r}")
