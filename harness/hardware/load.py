"""A short CUDA load, so NVML reads a GPU's PCIe link at its working speed: an idle GPU lowers
its link generation to save power."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from harness.hardware.gpus import Gpu
from harness.nvml import Nvml, RealNvml, torch_to_nvml

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
    """For each GPU, a context that loads it: ``busy`` on the real NVML's GPUs that torch can
    reach, found by UUID; nothing for a snapshot (judged as recorded) or a GPU torch cannot
    see (judged idle, which the PCIe check says)."""
    indices: dict[str, int] = {}
    if isinstance(nvml, RealNvml):
        try:
            import torch

            if torch.cuda.is_available():
                mapping = torch_to_nvml(range(torch.cuda.device_count()), nvml.gpu_uuids())
                indices = {uuid: index for index, uuid in mapping.items()}
        except (ImportError, LookupError, RuntimeError):
            indices = {}  # MIG devices or a broken CUDA: read the links as they are

    def around(gpu: Gpu) -> AbstractContextManager[Any]:
        index = indices.get(gpu.uuid)
        return nullcontext() if index is None else busy(index)

    return around
