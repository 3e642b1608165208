"""Memory tools for the memory suites (``suites/memory``).

- ``device``: the ``DeviceMemory`` interface, ``CudaMemory`` over torch's caching allocator,
  ``memory_cap`` (``set_per_process_memory_fraction`` with restore), the search's cap;
- ``usable``: how much one process can allocate;
- ``patterns``: the pattern memory test (write, read back, first bad offset);
- ``search``: the largest batch that fits, out-of-memory as the signal;
- ``growth``: memory growth across training iterations;
- ``imbalance``: memory per device during a DataParallel step;
- ``steps``: a zoo model's training step that records nothing;
- ``inputs``: a step's inputs at any batch, tiled on the device from a seed batch;
- ``estimate``: a training step's peak bytes at any batch size, counted on the meta device;
- ``sizes``: ``24GiB`` and friends;
- ``fake``: a device with a memory budget and a model with a linear footprint, for tests.

Everything that decides is written against ``DeviceMemory`` or plain callables, so it is
tested on the CPU with fakes; only ``CudaMemory`` needs a GPU.
"""
