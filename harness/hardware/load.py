"""A short CUDA load, so NVML reads a GPU's PCIe link at its working speed: an idle GPU lowers
its link generation to save power."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from harness.gpus import Gpu
from harness.nvml import Nvml, RealNvml

SETTLE_S = 0.2  # the link retrains in milliseconds; the performance state follows the load


@contextmanager
def busy(index: int, settle_s: float = SETTLE_S) -> Iterator[None]:
    """Keep CUDA device ``index`` multiplying bf16 matrices while the block runs."""
    import torch

    device = torch.device("cuda", index)
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    out = torch.empty_like(a)
    stop = threading.Event()

    def work() -> None:
        with torch.cuda.device(device):
            while not stop.is_set():
                for _ in range(8):
                    torch.mm(a, a, out=out)
                torch.cuda.synchronize(device)

    thread = threading.Thread(target=work, name=f"busy-cuda:{index}", daemon=True)
    thread.start()
    try:
        time.sleep(settle_s)
        yield
    finally:
        stop.set()
        thread.join()


def load_for(nvml: Nvml) -> Callable[[Gpu], AbstractContextManager[Any]]:
    """For each GPU, a context that loads it: ``busy`` on a real NVML's GPUs that CUDA shows
    this process (``Gpu.cuda_index``); nothing for a snapshot (judged as recorded) or a GPU
    CUDA cannot reach (judged idle, which the PCIe check says)."""
    real = isinstance(nvml, RealNvml) and _cuda_available()

    def around(gpu: Gpu) -> AbstractContextManager[Any]:
        if not real or gpu.cuda_index is None:
            return nullcontext()
        return busy(gpu.cuda_index)

    return around


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except (ImportError, RuntimeError):  # a broken CUDA: read the links as they are
        return False
