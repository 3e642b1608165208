"""Hardware performance measurement: bandwidth, matmul throughput, cross-device agreement.

Measurements follow GPU timing practice: untimed warm-up runs, device events around each
timed run (``timing``), the median of the repeats, inputs several times larger than the L2
cache (``sizes``) and never zero-filled (``pattern``). Every copy is checked for the bytes it
moved. The suites in ``suites/hardware`` turn these figures into claims; the functions here
also run on CPU tensors with a wall-clock timer, which is how the unit tests exercise them.
"""
