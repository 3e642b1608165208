"""The hardware figures of a node, printed: the measurements of ``suites/hardware`` without
pytest, for a quick look at a node or for comparing against a profile by eye.

    python -m harness.benchmarks.hardware --devices cuda [--no-pairs] [--no-allreduce]

One line per figure: what, where, value and unit. GPUs only: on a machine without one (or
with ``--devices cpu:N``) it refuses in one line, exit code 2.
"""

import argparse
import sys

import torch

from harness.devices import DeviceSet, devices_argument
from harness.environment import prepare_environment
from harness.gpus import NodeGpus, cuda_from_torch, identify, nvml_gpus
from harness.nvml import NvmlUnavailableError, RealNvml
from harness.perf import bandwidth
from harness.perf.agreement import devices_to_compare, run_everywhere
from harness.perf.compute import matmul_throughput
from harness.perf.gpus import distinct_gpus, ordered_pairs
from harness.perf.measurement import Measurement
from harness.rankpool.pool import RankPool


def show(metric: str, where: str, measurement: Measurement, problem: str | None = None) -> None:
    line = f"{metric:22} {measurement.value:10.1f} {measurement.unit:8} {where}"
    print(line + (f"  CORRUPT: {problem}" if problem else ""), flush=True)


def local_gpus() -> NodeGpus:
    """This machine's GPUs: NVML's list matched to torch's CUDA devices (CUDA's alone where
    NVML is unavailable)."""
    try:
        nvml = RealNvml()
    except NvmlUnavailableError:
        return NodeGpus(tuple(identify([], cuda_from_torch())), "torch")
    try:
        return NodeGpus(tuple(identify(nvml_gpus(nvml), cuda_from_torch())), "torch")
    finally:
        nvml.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.benchmarks.hardware")
    parser.add_argument("--devices", type=devices_argument, default="auto")
    parser.add_argument("--no-pairs", action="store_true", help="skip peer-to-peer copies")
    parser.add_argument("--no-allreduce", action="store_true", help="skip the NCCL all-reduce")
    prepare_environment()  # before --devices counts GPUs: PCI bus order, deterministic cuBLAS
    args = parser.parse_args(argv)
    devices: DeviceSet = args.devices
    if not distinct_gpus(devices):
        parser.exit(2, f"{parser.prog}: needs CUDA GPUs; --devices {devices.label} has none\n")
    node = local_gpus()
    gpus = [node.of(device) for device in distinct_gpus(devices)]
    for gpu in gpus:
        where = gpu.label
        for metric, copy in (
            ("d2d_copy_bandwidth", bandwidth.device_copy),
            ("h2d_pinned_bandwidth", bandwidth.host_to_device),
            ("d2h_pinned_bandwidth", bandwidth.device_to_host),
        ):
            result = copy(gpu)
            show(metric, where, result.bandwidth, result.corruption)
        show("bf16_matmul_tflops", where, matmul_throughput(gpu, torch.bfloat16))
        show("fp32_matmul_tflops", where, matmul_throughput(gpu, torch.float32))
        torch.cuda.empty_cache()
    if not args.no_pairs:
        for source, destination in ordered_pairs(gpus):
            result = bandwidth.peer_copy(source, destination)
            where = f"cuda:{source.cuda_index} -> cuda:{destination.cuda_index}"
            show("p2p_bandwidth", where, result.bandwidth, result.corruption)
    if len(gpus) > 1:
        for dtype in (torch.float32, torch.bfloat16):
            agreement = run_everywhere(devices_to_compare(devices, gpus), dtype)
            verdict = "identical" if agreement.agree else "; ".join(agreement.disagreements())
            print(f"{'cross_gpu_agreement':22} {dtype!s:>19} {verdict}", flush=True)
    if len(gpus) > 1 and not args.no_allreduce:
        with RankPool(len(gpus), devices=devices) as pool:
            labels = {str(gpu.device): gpu.label for gpu in gpus}
            results = pool.run("harness.perf.collective", "allreduce_on_rank", {"labels": labels})
        for result in results:
            if not result.ok:
                print(f"allreduce rank {result.rank}: {result.outcome}: {result.message}")
                return 1
        first = results[0].value
        problems = "; ".join(r.value.problem for r in results if r.value.problem) or None
        show("allreduce_busbw", f"{len(gpus)} ranks, {pool.backend}", first.busbw, problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
