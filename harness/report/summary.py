"""``python -m harness.report summary FILES... -o reports/summary.html``: one page that says
which node failed which check, why, and how every measured figure compares with its reference.

The page holds, in order: the verdict and totals; a node x check matrix, one row per test
module with the worst outcome of each node; the failures with their messages; the fleet
outliers (``harness.report.outliers``), one row per node naming the GPU they point at, each
node's figures folded beneath; plots of bandwidth, compute and memory across nodes; every
judged figure against its reference, tolerance and verdict, and the figures recorded without a
reference; every check's own row by module; the nodes (GPU model, driver, versions, counts);
and the skips grouped by reason. ``--format md`` writes the same tables, without
plots, as Markdown for CI logs and GitHub step summaries.

A node is ``Run.node``: the torchrun ranks of a node are one column, its worst outcome; the
failures name the rank. Jinja2 renders ``harness/report/templates`` (autoescaped HTML), and
matplotlib draws the plots (``harness.report.plots``); both come with the ``report`` extra.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report import markdown
from harness.report.merge import write_atomic
from harness.report.model import OUTCOMES, Case, Figure, Report, ReportError, Run, load_report
from harness.report.outliers import Outlier, OutlierGroup, fleet_outliers, group_outliers

# Outcome -> (symbol, css class, words). Symbols as well as colours: a cell reads in a
# monochrome CI log and for colour-blind readers too.
OUTCOME_MARKS = {
    "failed": ("✗", "fail", "failed"),
    "error": ("E", "error", "error"),
    "skipped": ("S", "skip", "skipped"),
    "passed": ("✓", "pass", "passed"),
    None: ("·", "none", "not run"),
}
WORST_FIRST = ("error", "failed", "passed", "skipped")  # a cell shows the first present
VERDICT_MARKS = {"fail": "✗", "warn": "⚠", "pass": "✓", None: ""}
OUTLIER_MARK = "⚑"
MESSAGE_LIMIT = 2000  # characters of a failure message in the Markdown (CI log) form


@dataclass
class Cell:
    """The outcomes of some cases on one node."""

    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    missing: int = 0  # checks of the group other nodes ran and this one did not

    @property
    def outcome(self) -> str | None:
        """Failed or errored if any case did, else passed if any did, else skipped."""
        return next((o for o in WORST_FIRST if self.counts[o]), None)

    @property
    def mark(self) -> str:
        """The outcome's symbol, with how many cases failed or errored."""
        symbol = OUTCOME_MARKS[self.outcome][0]
        bad = self.counts["failed"] + self.counts["error"]
        return f"{symbol}{bad}" if bad else symbol

    @property
    def note(self) -> str:
        """``S2`` where two cases were skipped beside others that ran, ``·56`` where 56 checks
        other nodes ran are missing: a passing cell must hide neither."""
        skipped = self.counts["skipped"]
        notes = [f"S{skipped}"] if skipped and self.outcome != "skipped" else []
        return " ".join(notes + ([f"·{self.missing}"] if self.missing and self.counts else []))

    @property
    def css(self) -> str:
        return OUTCOME_MARKS[self.outcome][1] + (" partial" if self.missing and self.counts else "")

    @property
    def title(self) -> str:
        if not self.counts:
            return "not run"
        parts = [f"{self.counts[o]} {OUTCOME_MARKS[o][2]}" for o in OUTCOMES if self.counts[o]]
        if self.missing:
            parts.append(f"{self.missing} not run here")
        return ", ".join(parts) + "".join(f"\n{message}" for message in self.messages[:3])

    def add(self, case: Case) -> None:
        self.counts[case.outcome] += 1
        if case.outcome != "passed" and case.message:
            self.messages.append(case.message)


@dataclass
class CheckRow:
    name: str  # the case's name within its group: "test_x[cuda:0]"
    cells: list[Cell]

    @property
    def uniform_pass(self) -> bool:
        return all(cell.outcome == "passed" for cell in self.cells)


@dataclass
class Group:
    """The checks of one test module (``suites.hardware.test_bandwidth``)."""

    name: str  # "hardware.test_bandwidth"
    suite: str  # "hardware"
    cells: list[Cell]
    checks: list[CheckRow]

    @property
    def outcome(self) -> str | None:
        return _worst(cell.outcome for cell in self.cells)

    @property
    def counts(self) -> Counter:
        return sum((cell.counts for cell in self.cells), Counter())

    @property
    def troubled_checks(self) -> list[CheckRow]:
        return [row for row in self.checks if not row.uniform_pass]


@dataclass(frozen=True)
class Failure:
    run: str  # the run's label: node, or node/rank<R>
    check: str
    outcome: str
    message: str
    details: str


@dataclass(frozen=True)
class FigureCell:
    figure: Figure
    outlier: bool

    @property
    def text(self) -> str:
        marks = VERDICT_MARKS[self.figure.verdict] + (OUTLIER_MARK if self.outlier else "")
        return f"{number(self.figure.value)} {marks}".strip()

    @property
    def css(self) -> str:
        return f"v-{self.figure.verdict or 'none'}" + (" outlier" if self.outlier else "")

    @property
    def title(self) -> str:
        return describe_figure(self.figure) + (" — fleet outlier" if self.outlier else "")


@dataclass
class FigureRow:
    """One figure of one check (and rank) across the nodes."""

    group: str
    check: str  # the case's name within its group
    name: str
    unit: str
    cells: list[FigureCell | None]

    @property
    def present(self) -> list[Figure]:
        return [cell.figure for cell in self.cells if cell is not None]

    @property
    def judged(self) -> bool:
        return any(figure.reference is not None for figure in self.present)

    @property
    def reference(self) -> str:
        """The reference and tolerance the nodes share, or "varies" (each cell has its own)."""
        judged = {(f.reference, f.tolerance) for f in self.present if f.reference is not None}
        if len(judged) != 1:
            return "varies by node" if judged else ""
        reference, tolerance = judged.pop()
        return f"{number(reference)} {self.unit}".strip() + (f", {tolerance}" if tolerance else "")

    @property
    def spread(self) -> str:
        values = [figure.value for figure in self.present]
        if len(values) < 2:
            return ""
        return (
            f"{number(min(values))} / {number(statistics.median(values))} / {number(max(values))}"
        )


@dataclass(frozen=True)
class OutlierRow:
    """A fleet outlier (``harness.report.outliers.Outlier``) as the tables show it."""

    run: str  # the run's label: node, or node/rank<R>
    check: str
    figure: str
    value: str
    median: str  # the fleet median, with how many runs of which GPU model
    deviation: str
    verdict: str  # the figure's own verdict against its reference, if judged


@dataclass(frozen=True)
class OutlierNode:
    """One node's fleet outliers: the GPUs they point at, then every one of them."""

    group: OutlierGroup
    rows: list[OutlierRow]

    @property
    def suspects(self) -> list[tuple[str, str, str]]:
        """(GPU label, "17 of 17", what stands out) per implicated GPU, and a last line for
        the outliers none of them explains."""
        total = len(self.group.outliers)
        lines = [
            (s.label, f"{len(s.outliers)} of {total}", s.description) for s in self.group.suspects
        ]
        if self.group.others:
            others = f"{len(self.group.others)} of {total}"
            lines.append(("none tied to one GPU", others, self.group.others_description))
        return lines


@dataclass
class Summary:
    title: str
    generated: str
    sources: list[str]
    nodes: list[str]
    node_facts: list[dict[str, Any]]
    totals: Counter
    groups: list[Group]
    failures: list[Failure]
    judged_figures: list[FigureRow]
    recorded_figures: list[FigureRow]
    verdicts: Counter
    outliers: list[OutlierRow]
    outlier_nodes: list[OutlierNode]
    skips: list[tuple[str, int, list[str]]]  # (reason, cases, nodes)
    plots: list[Any] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.totals["failed"] or self.totals["error"])

    @property
    def check_count(self) -> int:
        return sum(len(group.checks) for group in self.groups)

    @property
    def missing(self) -> list[tuple[str, int]]:
        """(node, how many checks other nodes ran that it did not), for nodes missing any."""
        return [(n["node"], n["cell"].missing) for n in self.node_facts if n["cell"].missing]

    @property
    def failing_nodes(self) -> list[str]:
        return list(dict.fromkeys(failure.run.split("/")[0] for failure in self.failures))


def number(value: float | None) -> str:
    """A figure as people read it: integers whole, large values without exponent."""
    if value is None:
        return ""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def describe_figure(figure: Figure) -> str:
    """``2345 GB/s, reference 2930 GB/s (-20%/+15%), -20.0%: fail``."""
    text = f"{number(figure.value)} {figure.unit}".strip()
    if figure.reference is not None:
        text += f", reference {number(figure.reference)} {figure.unit}".rstrip()
        if figure.tolerance:
            text += f" ({figure.tolerance})"
        if figure.reference:
            text += f", {(figure.value - figure.reference) / figure.reference * 100:+.1f}%"
    return text + (f": {figure.verdict}" if figure.verdict else "")


def natural_key(text: str) -> list[Any]:
    """``node2`` before ``node10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _worst(outcomes: Iterable[str | None]) -> str | None:
    present = set(outcomes)
    return next((o for o in WORST_FIRST if o in present), None)


def group_name(classname: str) -> str:
    return classname.removeprefix("suites.") or "(no module)"


def build_summary(report: Report, outliers: Sequence[Outlier], title: str = "") -> Summary:
    """Everything the templates show, computed once."""
    nodes = sorted(dict.fromkeys(run.node for run in report.runs), key=natural_key)
    column = {node: i for i, node in enumerate(nodes)}
    outlier_rows = [outlier_row(o) for o in outliers]
    outlier_nodes = [
        OutlierNode(group, [outlier_row(o) for o in group.outliers])
        for group in group_outliers(outliers)
    ]
    flagged = {(o.run, o.check, o.figure) for o in outlier_rows}

    groups: dict[str, Group] = {}
    rows: dict[tuple[str, str], CheckRow] = {}
    figure_rows: dict[tuple[str, str, str | None], FigureRow] = {}
    failures, skips, verdicts = [], {}, Counter()
    for run, case in report.cases():
        name = group_name(case.classname)
        group = groups.get(name)
        if group is None:
            cells = [Cell() for _ in nodes]
            group = groups[name] = Group(name, name.split(".")[0], cells, [])
        group.cells[column[run.node]].add(case)
        row = rows.get((name, case.name))
        if row is None:
            row = rows[name, case.name] = CheckRow(case.name, [Cell() for _ in nodes])
            group.checks.append(row)
        row.cells[column[run.node]].add(case)
        if case.outcome in ("failed", "error"):
            failures.append(Failure(run.label, case.check, case.outcome, *_message(case)))
        elif case.outcome == "skipped":
            reason = case.message or "(no reason given)"
            skips.setdefault(reason, []).append(run.node)
        for figure in case.figures:
            key = (case.check, figure.name, run.rank)
            frow = figure_rows.get(key)
            if frow is None:
                check = case.name if run.rank is None else f"{case.name} (rank {run.rank})"
                frow = figure_rows[key] = FigureRow(name, check, figure.name, figure.unit, [])
                frow.cells = [None] * len(nodes)
            outlier = (run.label, case.check, figure.name) in flagged
            frow.cells[column[run.node]] = FigureCell(figure, outlier)
            if figure.verdict:
                verdicts[figure.verdict] += 1

    missing = Counter()
    for group in groups.values():
        for node, cell in zip(nodes, group.cells):
            cell.missing = sum(not row.cells[column[node]].counts for row in group.checks)
            missing[node] += cell.missing
    failures.sort(key=lambda f: (f.check, natural_key(f.run)))
    figure_list = list(figure_rows.values())
    return Summary(
        title=title or "Harness report",
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sources=list(dict.fromkeys(run.source for run in report.runs)),
        nodes=nodes,
        node_facts=[
            _node_facts(node, [r for r in report.runs if r.node == node], missing[node])
            for node in nodes
        ],
        totals=Counter(case.outcome for _, case in report.cases()),
        groups=list(groups.values()),
        failures=failures,
        judged_figures=[row for row in figure_list if row.judged],
        recorded_figures=[row for row in figure_list if not row.judged],
        verdicts=verdicts,
        outliers=outlier_rows,
        outlier_nodes=outlier_nodes,
        skips=sorted(
            (
                (reason, len(where), sorted(set(where), key=natural_key))
                for reason, where in skips.items()
            ),
            key=lambda skip: -skip[1],
        ),
    )


def _message(case: Case) -> tuple[str, str]:
    """(message, details): the message, else the details' last line (pytest's ``E   ...``)."""
    details = case.details.strip()
    message = case.message.strip() or (details.splitlines()[-1] if details else "(no message)")
    return message, "" if details == message else details


def _node_facts(node: str, runs: list[Run], missing: int) -> dict[str, Any]:
    first = runs[0]
    models = Counter(
        value for key, value in first.properties if re.fullmatch(r"node\.gpu\.\d+\.name", key)
    ) or Counter(value for key, value in first.properties if re.fullmatch(r"gpu\.\d+\.name", key))
    cell = Cell(missing=missing)
    for run in runs:
        for case in run.cases:
            cell.add(case)
    return {
        "node": node,
        "gpus": ", ".join(f"{count}x {model}" for model, count in models.items()) or "no GPU",
        "driver": first.prop("node.driver") or first.prop("driver") or "",
        "cuda": first.prop("node.cuda") or first.prop("cuda") or "",
        "torch": first.prop("torch") or "",
        "profile": first.prop("profile") or "",
        "runs": len(runs),
        "timestamp": min(run.timestamp for run in runs),
        "counts": cell.counts,
        "cell": cell,
    }


def outlier_row(outlier: Outlier) -> OutlierRow:
    median = f"{number(outlier.median)} {outlier.unit}".strip()
    return OutlierRow(
        run=outlier.node,
        check=outlier.check,
        figure=outlier.figure,
        value=f"{number(outlier.value)} {outlier.unit}".strip(),
        median=f"{median} ({outlier.runs} runs, {outlier.gpu_model})",
        deviation=outlier.change,
        verdict=outlier.verdict or "not judged",
    )


# Rendering ----------------------------------------------------------------------------------


def render(summary: Summary, fmt: str) -> str:
    """The summary as ``html`` (one self-contained page) or ``md``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown.cell
    env.globals.update(OUTCOME_MARKS=OUTCOME_MARKS, number=number, describe=describe_figure)
    return env.get_template(f"summary.{fmt}").render(s=summary, limit=MESSAGE_LIMIT)


# Command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JUnit files, one or many nodes")
    parser.add_argument(
        "-o",
        "--output",
        help="where to write it (default reports/summary.html, or .md with --format md); "
        "- for standard output",
    )
    parser.add_argument(
        "--format",
        choices=("html", "md"),
        default="html",
        help="html: one self-contained page with plots; md: Markdown tables for CI logs",
    )
    parser.add_argument("--title", default="", help="the page's title (default: Harness report)")


def run(args: argparse.Namespace) -> int:
    """The command; jinja2 and matplotlib are imported when rendering, and a missing one is
    reported by ``harness.report.__main__`` as the missing ``report`` extra."""
    try:
        report = load_report(args.files)
        summary = build_summary(report, fleet_outliers(report), args.title)
        if args.format == "html":
            from harness.report.plots import render_plots

            flagged = {(o.run, o.check, o.figure) for o in summary.outliers}
            summary.plots = render_plots(
                report,
                summary.nodes,
                lambda run, case, figure: (run.label, case.check, figure.name) in flagged,
            )
        text = render(summary, args.format)
        if args.output == "-":
            sys.stdout.write(text)
            return 0
        output = Path(args.output or f"reports/summary.{args.format}")
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ReportError(f"{output}: cannot write: {err.strerror or err}") from None
        write_atomic(output, text.encode("utf-8"))
    except ReportError as err:
        print(f"harness report summary: {err}", file=sys.stderr)
        return 2
    print(f"summary: {output} ({len(summary.nodes)} nodes, {len(report.checks())} checks)")
    return 0
