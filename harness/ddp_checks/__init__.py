"""Machinery for the DDP suites (``suites/ddp/``), run inside every rank of a process group.

- ``ranks``: comparing tensors across ranks (all-gather, then every rank judges the same
  data, so every rank reaches the same verdict and none is left waiting in a collective).
- ``data``: one global batch built identically on every rank from a shared seed, and the
  rank's equal shard of it; a loss whose average over equal shards is the full-batch loss.
- ``modules``: small modules with the behaviour a DDP claim needs to observe (a buffer
  updated by a rank-dependent amount, a parameter left out of forward, BatchNorm).
- ``training``: comparing a DDP run's gradients and parameters with the single-process
  run (``harness.training.run_steps`` records), and a torch.optim-free SGD for ranks.
- ``collectives``: rank-dependent values for collective tests, with the expected results
  computed independently on every rank, and what each backend supports.
- ``features``: skipping tests of optional DDP features (``no_sync``, ``join``) that an
  implementation lacks, and torch's deprecation of ``broadcast_buffers``.
"""
