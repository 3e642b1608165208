"""Running each replica on its own thread.

Threads, not processes: replicas share the autograd graph of one training
step. Grad mode, inference mode and autocast are thread-local in PyTorch, so
the caller's settings are carried into every worker.

``ReplicaWorkers`` keeps one thread per replica slot alive across calls.
cuDNN caches benchmarked convolution plans per thread, and
``torch.nn.DataParallel`` starts new threads on every forward, so with
``cudnn.benchmark=True`` it re-benchmarks every step (about 50x slower for a
small CNN on an H200; see docs/design.md). Persistent threads keep those caches.
"""

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import torch

from ._devices import DeviceLike, as_devices


class ReplicaWorkers:
    """Thread ``i`` always runs replica ``i``."""

    def __init__(self) -> None:
        self._executors: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def submit(self, calls: Sequence[Callable[[], Any]]) -> list[Future]:
        with self._lock:
            while len(self._executors) < len(calls):
                index = len(self._executors)
                self._executors.append(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dp-replica-{index}")
                )
            return [ex.submit(call) for ex, call in zip(self._executors, calls)]

    def shutdown(self) -> None:
        with self._lock:
            for ex in self._executors:
                ex.shutdown(wait=False)
            self._executors = []


class _CallerState:
    """The thread-local settings of the calling thread, to re-enter in a worker."""

    def __init__(self, device_type: str) -> None:
        self.device_type = device_type
        self.grad = torch.is_grad_enabled()
        self.inference = torch.is_inference_mode_enabled()
        self.autocast = torch.is_autocast_enabled(device_type)
        self.autocast_dtype = torch.get_autocast_dtype(device_type)

    def enter(self, stack: ExitStack, device: torch.device) -> None:
        stack.enter_context(torch.inference_mode(self.inference))
        stack.enter_context(torch.set_grad_enabled(self.grad))
        # Entered even when off, so a worker thread never keeps a state a
        # previous replica left behind.
        stack.enter_context(
            torch.autocast(self.device_type, enabled=self.autocast, dtype=self.autocast_dtype)
        )
        if device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))
            stack.enter_context(torch.cuda.stream(torch.cuda.current_stream(device)))


def _call(module: Any, args: Any, kwargs: dict, device: torch.device, state: _CallerState) -> Any:
    with ExitStack() as stack:
        state.enter(stack, device)
        if not isinstance(args, (list, tuple)):
            args = (args,)
        return module(*args, **kwargs)


def parallel_apply(
    modules: Sequence[Any],
    inputs: Sequence[Any],
    kwargs_tup: Sequence[dict] | None = None,
    devices: Sequence[DeviceLike] | None = None,
    workers: ReplicaWorkers | None = None,
) -> list:
    """``modules[i](*inputs[i], **kwargs_tup[i])`` for every ``i``, concurrently.

    An exception from a replica is re-raised with its own type and message,
    with a note naming the replica and its device; when several replicas
    fail, the lowest-numbered one is reported.
    """
    if len(modules) != len(inputs):
        raise ValueError(f"{len(modules)} modules but {len(inputs)} inputs")
    kwargs_tup = list(kwargs_tup) if kwargs_tup is not None else [{} for _ in modules]
    if len(kwargs_tup) != len(modules):
        raise ValueError(f"{len(modules)} modules but {len(kwargs_tup)} kwargs")
    if devices is None:
        devices = [_device_of(args, i) for i, args in enumerate(inputs)]
    devices = as_devices(devices)
    if len(devices) != len(modules):
        raise ValueError(f"{len(modules)} modules but {len(devices)} devices")

    state = _CallerState(devices[0].type if devices else "cpu")
    calls = [
        (lambda m=m, a=a, k=k, d=d: _call(m, a, k, d, state))
        for m, a, k, d in zip(modules, inputs, kwargs_tup, devices)
    ]
    if len(calls) == 1:
        futures = [_run_inline(calls[0])]
    else:
        own = workers is None
        pool = ReplicaWorkers() if own else workers
        try:
            futures = pool.submit(calls)
            for future in futures:
                future.exception()
        finally:
            if own:
                pool.shutdown()

    outputs = []
    for i, (future, device) in enumerate(zip(futures, devices)):
        error = future.exception()
        if error is not None:
            error.add_note(f"Raised in replica {i} on device {device}.")
            raise error
        outputs.append(future.result())
    return outputs


def _run_inline(call: Callable[[], Any]) -> Future:
    future: Future = Future()
    try:
        future.set_result(call())
    except Exception as error:
        future.set_exception(error)
    return future


def _device_of(args: Any, replica: int) -> torch.device:
    tensor = _first_tensor(args)
    if tensor is None:
        raise ValueError(
            f"replica {replica}: no device was given and its inputs hold no tensor to take one from"
        )
    return tensor.device


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    for item in items:
        tensor = _first_tensor(item)
        if tensor is not None:
            return tensor
    return None
