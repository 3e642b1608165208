"""``python -m harness.report diff BASE NEW``: what changed since last night, for nightly CI.

Tests are matched by (run label, check): ``gpu-node07`` + ``suites...::test_x[cuda:3]``. BASE
and NEW are one JUnit file each, a node's own or a merged one (``merge`` the nodes' files first).

Regressions (exit code 1):

- newly failing: failed or errored in NEW, passed or skipped in BASE, or new and failing;
- vanished: in BASE, missing from NEW (a whole missing node is one line);
- a figure worse beyond its tolerance: its relative change from BASE to NEW, on the bad side of
  the unit's direction (``model.direction``), exceeds the tolerance on that side
  (``-20%/+15%``: a rate that fell more than 20%, a duration that rose more than 15%).

Listed, no regression: newly passing, newly skipped, new tests, figures better beyond their
tolerance, and figures without a tolerance that moved more than ``--untoleranced`` (10%): the
harness makes no claim about an unjudged number, its test's outcome carries the claim.
A test present more than once for one run label (a node that ran a suite twice) is compared by
its first occurrence. Exit code 2: an input that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from harness.report.markdown import cell
from harness.report.model import (
    Case,
    Figure,
    Report,
    ReportError,
    direction,
    load_report,
    quantity,
)

UNTOLERANCED = 0.10
FAILING = ("failed", "error")


@dataclass(frozen=True)
class Change:
    node: str
    check: str
    base: str | None  # outcome in BASE, None when new
    new: str | None  # outcome in NEW, None when vanished
    message: str = ""


@dataclass(frozen=True)
class Moved:
    node: str
    check: str
    figure: str
    unit: str
    base: float
    new: float
    tolerance: str | None

    @property
    def change(self) -> float:
        return (self.new - self.base) / abs(self.base) if self.base else float("inf")

    @property
    def text(self) -> str:
        change = f"{self.change:+.1%}" if self.base else "from 0"
        limit = f"tolerance {self.tolerance}" if self.tolerance else "no tolerance"
        return (
            f"{self.figure}: {quantity(self.base, self.unit)} -> {quantity(self.new, self.unit)} "
            f"({change}, {limit})"
        )


@dataclass
class Diff:
    newly_failing: list[Change] = field(default_factory=list)
    vanished: list[Change] = field(default_factory=list)
    vanished_nodes: dict[str, int] = field(default_factory=dict)  # node -> its tests in BASE
    worse: list[Moved] = field(default_factory=list)
    newly_passing: list[Change] = field(default_factory=list)
    newly_skipped: list[Change] = field(default_factory=list)
    new: list[Change] = field(default_factory=list)
    new_nodes: dict[str, int] = field(default_factory=dict)  # node -> its tests in NEW
    better: list[Moved] = field(default_factory=list)
    moved: list[Moved] = field(default_factory=list)  # without a tolerance

    @property
    def regressions(self) -> int:
        vanished = len(self.vanished) + sum(self.vanished_nodes.values())
        return len(self.newly_failing) + vanished + len(self.worse)


def compare(base: Report, new: Report, *, untoleranced: float = UNTOLERANCED) -> Diff:
    diff = Diff()
    old_cases, new_cases = _index(base), _index(new)
    new_nodes = {node for node, _ in new_cases}
    for node in dict.fromkeys(node for node, _ in old_cases):
        if node not in new_nodes:
            diff.vanished_nodes[node] = sum(1 for n, _ in old_cases if n == node)
    for key, old in old_cases.items():
        node, check = key
        case = new_cases.get(key)
        if case is None:
            if node not in diff.vanished_nodes:
                diff.vanished.append(Change(node, check, old.outcome, None))
            continue
        change = Change(node, check, old.outcome, case.outcome, case.message)
        if case.outcome in FAILING and old.outcome not in FAILING:
            diff.newly_failing.append(change)
        elif old.outcome in FAILING and case.outcome == "passed":
            diff.newly_passing.append(change)
        elif case.outcome == "skipped" and old.outcome != "skipped":
            diff.newly_skipped.append(change)
        _figures(diff, node, check, old, case, untoleranced)
    old_nodes = {node for node, _ in old_cases}
    for node in dict.fromkeys(node for node, _ in new_cases):
        if node not in old_nodes:
            diff.new_nodes[node] = sum(1 for n, _ in new_cases if n == node)
    for key, case in new_cases.items():
        if key not in old_cases:
            if key[0] in diff.new_nodes and case.outcome not in FAILING:
                continue
            change = Change(*key, None, case.outcome, case.message)
            (diff.newly_failing if case.outcome in FAILING else diff.new).append(change)
    return diff


def _index(report: Report) -> dict[tuple[str, str], Case]:
    cases: dict[tuple[str, str], Case] = {}
    for run, case in report.cases():
        cases.setdefault((run.label, case.check), case)
    return cases


def _figures(diff: Diff, node: str, check: str, old: Case, case: Case, untoleranced: float):
    before = {figure.name: figure for figure in old.figures}
    for figure in case.figures:
        previous = before.get(figure.name)
        if previous is None or previous.unit != figure.unit:
            continue
        tolerance = figure.tolerance or previous.tolerance
        moved = Moved(
            node, check, figure.name, figure.unit, previous.value, figure.value, tolerance
        )
        side = _side(moved, figure, previous, untoleranced)
        if side == "worse":
            diff.worse.append(moved)
        elif side == "better":
            diff.better.append(moved)
        elif side == "moved":
            diff.moved.append(moved)


def _side(moved: Moved, figure: Figure, previous: Figure, untoleranced: float) -> str | None:
    """``worse``/``better`` beyond the tolerance, ``moved`` beyond ``untoleranced`` without one,
    or None."""
    if moved.new == moved.base:
        return None
    bounds = figure.tolerance_pct() or previous.tolerance_pct()
    change = moved.change
    if bounds is None:
        return "moved" if abs(change) > untoleranced else None
    below, above = bounds[0] / 100, bounds[1] / 100
    if not (change < -below or change > above):
        return None
    better = direction(figure.unit)
    if better == "either":
        return "worse"
    rose = change > 0
    return "better" if rose == (better == "higher") else "worse"


# ---- output --------------------------------------------------------------------------------


def render(diff: Diff, base: str, new: str, *, markdown: bool = False) -> str:
    lines = []
    if markdown:
        lines += [f"## Report diff: {cell(base)} -> {cell(new)}", ""]
    else:
        lines.append(f"diff {base} -> {new}")

    def section(title: str, rows: list[tuple[str, str, str]]) -> None:
        if not rows:
            return
        if markdown:
            lines.extend(["", f"### {title} ({len(rows)})", "", "| node | test | change |"])
            lines.append("|---|---|---|")
            lines.extend(f"| {cell(n)} | {cell(c)} | {cell(t)} |" for n, c, t in rows)
        else:
            lines.append(f"{title} ({len(rows)}):")
            lines.extend(f"  {n}  {c}: {t}" for n, c, t in rows)

    def changes(items: list[Change]) -> list[tuple[str, str, str]]:
        return [(c.node, c.check, _transition(c)) for c in items]

    def moves(items: list[Moved]) -> list[tuple[str, str, str]]:
        return [(m.node, m.check, m.text) for m in items]

    gone = [
        (node, "(every test)", f"the node is missing from NEW ({count} tests in BASE)")
        for node, count in diff.vanished_nodes.items()
    ]
    section("REGRESSION newly failing", changes(diff.newly_failing))
    section("REGRESSION vanished", gone + changes(diff.vanished))
    section("REGRESSION figures worse beyond their tolerance", moves(diff.worse))
    section("newly passing", changes(diff.newly_passing))
    section("newly skipped", changes(diff.newly_skipped))
    arrived = [
        (node, "(every test)", f"the node is new in NEW ({count} tests)")
        for node, count in diff.new_nodes.items()
    ]
    section("new tests", arrived + changes(diff.new))
    section("figures better beyond their tolerance", moves(diff.better))
    section("figures without a tolerance that moved", moves(diff.moved))
    vanished = len(diff.vanished) + sum(diff.vanished_nodes.values())
    verdict = (
        f"{diff.regressions} regression(s): {len(diff.newly_failing)} newly failing, "
        f"{vanished} vanished, {len(diff.worse)} figure(s) worse beyond tolerance"
        if diff.regressions
        else "no regressions"
    )
    lines += ["", f"**{verdict}**"] if markdown else [verdict]
    return "\n".join(lines) + "\n"


def _transition(change: Change) -> str:
    text = f"{change.base or 'new'} -> {change.new or 'missing'}"
    return f"{text}: {change.message}" if change.message and change.new != "passed" else text


# ---- command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="BASE", help="last night's JUnit file (merged or not)")
    parser.add_argument("new", metavar="NEW", help="tonight's JUnit file (merged or not)")
    parser.add_argument("--format", choices=("text", "md"), default="text")
    parser.add_argument(
        "--untoleranced",
        type=float,
        default=UNTOLERANCED,
        metavar="FRACTION",
        help=f"list figures without a tolerance that moved more than this (default {UNTOLERANCED})",
    )


def run(args: argparse.Namespace) -> int:
    try:
        base = load_report([args.base])
        new = load_report([args.new])
    except ReportError as err:
        print(f"harness report diff: {err}", file=sys.stderr)
        return 2
    diff = compare(base, new, untoleranced=args.untoleranced)
    sys.stdout.write(render(diff, args.base, args.new, markdown=args.format == "md"))
    return 1 if diff.regressions else 0
