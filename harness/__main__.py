"""``python -m harness COMMAND``: the harness's command line.

``inventory --json [-o FILE]`` writes this node's NVML inventory and health as a snapshot
(format ``gpu-harness-snapshot/2``, see README "Node snapshots"). Exit codes: 0 written,
2 bad arguments, 3 NVML unavailable on this machine.
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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
