"""``python -m harness.report merge|summary|diff|outliers ...``: see each module's docstring.

``summary`` needs the optional ``report`` extra (Jinja2, matplotlib) and is imported only when
asked for, so merging, diffing and outliers work with the base install."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from harness.report import diff, merge, outliers

PROG = "python -m harness.report"
EXTRA = "summary needs the report extra: pip install 'gpu-dp-harness[report]'"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: a CI log shows the reason at a glance.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _Parser(prog=PROG, description="JUnit reports of the GPU harness, across nodes.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    for name, module, text in (
        ("merge", merge, "merge JUnit files of many nodes and ranks into one"),
        ("diff", diff, "what got worse from BASE to NEW (exit 1 on a regression)"),
        ("outliers", outliers, "figures far from their GPU model's fleet median (exit 1 if any)"),
    ):
        module.add_arguments(commands.add_parser(name, help=text, description=module.__doc__))
        runners[name] = module.run
    summary_parser = commands.add_parser(
        "summary", help="one HTML (or markdown) page: node x check matrix, figures, plots"
    )
    if argv[:1] == ["summary"]:
        try:
            from harness.report import summary
        except ModuleNotFoundError as err:
            return _missing_extra(err)
        summary.add_arguments(summary_parser)
        runners["summary"] = summary.run
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except ModuleNotFoundError as err:  # the summary may import its libraries when it draws
        return _missing_extra(err)


def _missing_extra(err: ModuleNotFoundError) -> int:
    if (err.name or "harness").split(".")[0] == "harness":  # our own bug, not a missing extra
        raise err
    print(f"{EXTRA} ({err.name} is missing)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
