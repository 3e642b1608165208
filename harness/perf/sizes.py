"""Problem sizes of the measurements: every buffer several times larger than the L2 cache,
so bandwidth figures are memory's and links', not the cache's."""

MiB = 2**20

# The largest L2 among the GPUs the shipped profiles describe (H100 and H200: 50 MB).
L2_CACHE_BYTES = 50 * MiB

COPY_BYTES = 512 * MiB  # device-to-device and peer-to-peer, per buffer
HOST_COPY_BYTES = 256 * MiB  # pinned host <-> device, per buffer
ALLREDUCE_BYTES = 1024 * MiB  # per rank (nccl-tests' S); busbw plateaus well below this
MATMUL_SIZE = 8192  # square operands: 128 MiB each in bf16, 256 MiB in fp32

WARMUP = 3
REPEATS = 20
MATMUL_REPEATS = 10


def describe_bytes(nbytes: int) -> str:
    """``512 MiB``, ``1.5 GiB``, ``4096 B``."""
    for unit, size in (("GiB", 2**30), ("MiB", MiB), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:g} {unit}"
    return f"{nbytes} B"
