"""Per-test overhead of a distributed test on the rank pool, against fresh processes per test.

    python -m harness.benchmarks.pool_overhead [--world-size 4] [--repeat 200] [--fresh 3]
                                               [--devices cpu] [--json FILE]

The test is trivial on purpose, so that its time is the runner's overhead: every rank
all-reduces a one-element tensor and checks the sum. On the pool it goes through the real
API (``RankPool.run``: send, import, call, collect per-rank results), ``--repeat`` times
after a warm-up, on ranks started once. Fresh processes per test are what runners without
a pool do (PyTorch's ``MultiProcessTestCase``, torchrun per test): spawn W interpreters,
each imports torch, joins a new process group (FileStore), runs the test, leaves, exits;
timed ``--fresh`` times. Both figures are medians of wall time per test, in milliseconds.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from harness.devices import devices_argument
from harness.rankpool.layout import RankLayout, plan_ranks
from harness.rankpool.pool import RankPool

# Ranks import the test by module name, also when this file runs as __main__.
MODULE = "harness.benchmarks.pool_overhead"


def trivial(dist_env) -> None:
    """The test: all-reduce one element on every rank, check the sum."""
    import torch
    import torch.distributed as dist

    value = torch.ones(1, device=dist_env.device)
    dist.all_reduce(value)
    assert value.item() == dist_env.world_size


def _fresh_rank(rank: int, layout: RankLayout, store_path: str) -> None:
    """One rank of a fresh-process test: import torch, join, run ``trivial``, leave."""
    import torch
    import torch.distributed as dist

    from harness.rankpool.env import DistEnv

    device = torch.device(layout.devices[rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    store = dist.FileStore(store_path, layout.world_size)
    dist.init_process_group(
        layout.backend,
        store=store,
        rank=rank,
        world_size=layout.world_size,
        timeout=timedelta(seconds=60),
    )
    trivial(DistEnv(rank, layout.world_size, device, layout.backend))
    dist.destroy_process_group()


def fresh_processes_test(layout: RankLayout) -> float:
    """Seconds for one test on freshly spawned processes, start to all exited."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="harness-fresh-") as directory:
        store_path = os.path.join(directory, "store")
        start = time.perf_counter()
        processes = [
            context.Process(target=_fresh_rank, args=(rank, layout, store_path))
            for rank in range(layout.world_size)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        elapsed = time.perf_counter() - start
    codes = [process.exitcode for process in processes]
    if codes != [0] * layout.world_size:
        raise RuntimeError(f"a fresh-process rank failed: exit codes {codes}")
    return elapsed


def pool_tests(pool: RankPool, repeat: int, warmup: int) -> list[float]:
    """Seconds for each of ``repeat`` runs of the test on the (started) pool."""
    times = []
    for index in range(warmup + repeat):
        start = time.perf_counter()
        results = pool.run(MODULE, "trivial", timeout=60)
        elapsed = time.perf_counter() - start
        bad = [r for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"the trivial test failed on the pool: {bad}")
        if index >= warmup:
            times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.benchmarks.pool_overhead")
    parser.add_argument("--world-size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=200, help="tests timed on the pool")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=3, help="tests timed on fresh processes")
    parser.add_argument(
        "--devices", type=devices_argument, default="cpu:4", help="a --devices spec; default cpu:4"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    devices = args.devices
    layout = plan_ranks(devices, args.world_size)
    where = f"{args.world_size} ranks, {layout.backend} on {', '.join(sorted(set(layout.devices)))}"
    print(f"trivial distributed test, {where}", flush=True)

    with RankPool(args.world_size, devices=devices, timeout=60) as pool:
        start = time.perf_counter()
        pool.start()
        cold_start = time.perf_counter() - start
        print(f"pool start (once per session): {cold_start * 1e3:.0f} ms", flush=True)
        pool_times = pool_tests(pool, args.repeat, args.warmup)
    pool_ms = statistics.median(pool_times) * 1e3
    pool_p90 = statistics.quantiles(pool_times, n=10)[-1] * 1e3 if len(pool_times) > 1 else pool_ms
    print(f"on the pool: median {pool_ms:.2f} ms per test, p90 {pool_p90:.2f} ms", end="")
    print(f" ({args.repeat} tests)")

    fresh_times = [fresh_processes_test(layout) for _ in range(args.fresh)]
    fresh_ms = statistics.median(fresh_times) * 1e3
    print(f"fresh processes: median {fresh_ms:.0f} ms per test ({args.fresh} tests)")
    ratio = fresh_ms / pool_ms
    print(f"the pool is {ratio:.0f}x faster per test")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "world_size": args.world_size,
                    "backend": layout.backend,
                    "devices": list(layout.devices),
                    "pool_start_ms": round(cold_start * 1e3, 1),
                    "pool_median_ms": round(pool_ms, 3),
                    "pool_p90_ms": round(pool_p90, 3),
                    "pool_tests": args.repeat,
                    "fresh_median_ms": round(fresh_ms, 1),
                    "fresh_tests": args.fresh,
                    "ratio": round(ratio, 1),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
