"""``python -m harness COMMAND``: the harness's command line.

- ``inventory --json [-o FILE]`` writes this node's NVML inventory and health as a snapshot
  (format ``gpu-harness-snapshot/2``, docs/operators.md). Exit codes: 0 written, 1 the GPU
  list unreadable or FILE not writable, 2 bad arguments, 3 NVML unavailable on this machine.
- ``environment`` prints the software stack (torch, CUDA, cuDNN, NCCL, driver, nvidia-ml-py)
  and the environment variables that change what a run measures, as this shell sets them
  (the JUnit suite properties record them as the run saw them). Exit code 0.
"""

import argparse
import sys

from harness.nvml import GpuLostError, NvmlUnavailableError, RealNvml
from harness.nvml.snapshot import dumps, take_snapshot, write_snapshot

EXIT_NO_NVML = 3


def inventory(args: argparse.Namespace) -> int:
    try:
        nvml = RealNvml()
    except NvmlUnavailableError as err:
        print(f"harness inventory: NVML unavailable: {err}", file=sys.stderr)
        return EXIT_NO_NVML
    try:
        snapshot = take_snapshot(nvml)
    except GpuLostError as err:  # only the UUID list itself can raise it
        print(f"harness inventory: {err}", file=sys.stderr)
        return 1
    finally:
        nvml.close()
    if args.output:
        try:
            write_snapshot(snapshot, args.output)
        except OSError as err:
            print(f"harness inventory: cannot write {args.output}: {err.strerror}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(dumps(snapshot))
    return 0


def environment(args: argparse.Namespace) -> int:
    import torch

    from harness.environment import host_facts, recorded_environment

    print(", ".join(f"{name} {version}" for name, version in host_facts().versions().items()))
    for name, value in recorded_environment():
        print(f"{name.removeprefix('env.')}={value}")
    backend = torch.cuda.get_allocator_backend() if torch.cuda.is_available() else "n/a"
    print(f"CUDA allocator backend: {backend}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inv = commands.add_parser(
        "inventory", help="write this node's NVML inventory and health as a JSON snapshot"
    )
    inv.add_argument("--json", action="store_true", help="JSON output (the only format, default)")
    inv.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (atomically), not stdout"
    )
    inv.set_defaults(run=inventory)
    env = commands.add_parser(
        "environment", help="print the software stack and the environment that changes figures"
    )
    env.set_defaults(run=environment)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
