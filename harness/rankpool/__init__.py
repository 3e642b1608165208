"""Distributed tests: a persistent pool of rank processes, and the rank's view of its world.

One concern per module, as pytest-xdist splits its controller from its workers:

- ``pool``: the controller side. ``RankPool`` starts W rank processes once (spawn) and
  runs a function on every rank per call, turning hangs and deaths into results.
- ``worker``: the rank side, the loop each rank process runs.
- ``env``: ``DistEnv``, what a test body sees of its rank (rank, device, backend, ``ddp``).
- ``layout``: which device and backend each rank gets from ``--devices``.
- ``protocol``: what crosses the process boundary (plain data only) and ``RankResult``.
- ``loading``: how a rank imports a test module (with pytest's assertion rewriting).
- ``stacks``: Python stacks of running ranks, through faulthandler.
- ``timeouts``: the per-test timeout's defaults, the process group's timeout, the guards.
- ``verdict``: per-rank results folded into one test outcome and message.
- ``torchrun``: the same tests run in-process on every rank started by torchrun.

This package imports nothing heavy at import time: a rank imports ``harness.rankpool.worker``
before it has set its environment, and only then imports torch.
"""
