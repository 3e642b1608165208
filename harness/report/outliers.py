"""Fleet outliers: a figure far from what the same GPU model gives on the other nodes.

A fixed reference with a tolerance wide enough for every healthy node passes a GPU that runs
8% below its identical peers; across a fleet that GPU stands out. For each (GPU model, check,
figure), the figures of every run of that model are compared with their median ``m``, using
the median absolute deviation scaled to a normal standard deviation, ``s = 1.4826 * MAD``
(robust: the outliers themselves barely move it). A value is flagged when it is on the bad side
of ``m`` (``model.direction`` of its unit: below for rates, above for durations and
temperatures) by more than

- ``threshold`` robust standard deviations (3.5, Iglewicz and Hoaglin's modified z-score), and
- ``min_relative`` of ``|m|`` (5%): with a uniform fleet the MAD is tiny or 0, and a 0.3%
  difference is not worth a person's look,

among at least ``min_runs`` runs (5) with the figure. A check parametrised per GPU
(``[cuda:3]``) or per pair is compared slot by slot, like with like.

Figures with no better side (amounts and counts: MiB, error counters, batch sizes) are not
compared: an ECC counter away from a fleet median of 0 is already its own check's failure, and a
different memory size is an inventory question the profile answers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

from harness.report.model import Report, ReportError, direction, load_report, quantity

MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation
THRESHOLD = 3.5
MIN_RELATIVE = 0.05
MIN_RUNS = 5


@dataclass(frozen=True)
class Outlier:
    node: str  # the run's label
    check: str
    figure: str
    unit: str
    value: float
    median: float
    sigma: float  # 1.4826 * MAD of the group
    runs: int  # how many runs the figure was compared across
    gpu_model: str
    verdict: str | None  # the figure's own verdict against its reference, if judged

    @property
    def deviation(self) -> float:
        """Relative to the median: -0.08 is 8% below."""
        return (self.value - self.median) / abs(self.median) if self.median else float("inf")

    @property
    def line(self) -> str:
        side = "below" if self.value < self.median else "above"
        relative = f"{abs(self.deviation):.1%} " if self.median else ""
        judged = f"; its own verdict: {self.verdict}" if self.verdict else ""
        return (
            f"{self.node}: {self.check} {self.figure} = {quantity(self.value, self.unit)}, "
            f"{relative}{side} the median {quantity(self.median, self.unit)} of {self.runs} "
            f"{self.gpu_model} runs (robust sigma {quantity(self.sigma, self.unit)}){judged}"
        )


def fleet_outliers(
    report: Report,
    *,
    threshold: float = THRESHOLD,
    min_relative: float = MIN_RELATIVE,
    min_runs: int = MIN_RUNS,
) -> list[Outlier]:
    """Every figure far on its bad side of its GPU model's fleet median, worst first."""
    groups: dict[tuple[str, str, str, str], list[tuple[str, float, str | None]]] = {}
    for run, case in report.cases():
        model = run.gpu_model
        if model is None:  # a CPU run has no peers to be compared with
            continue
        for figure in case.figures:
            if direction(figure.unit) == "either":
                continue
            key = (model, case.check, figure.name, figure.unit)
            groups.setdefault(key, []).append((run.label, figure.value, figure.verdict))
    found = []
    for (model, check, name, unit), values in groups.items():
        if len(values) < min_runs:
            continue
        median = statistics.median(value for _, value, _ in values)
        sigma = MAD_SCALE * statistics.median(abs(value - median) for _, value, _ in values)
        for node, value, verdict in values:
            bad = _badness(value - median, direction(unit))
            if bad > threshold * sigma and bad > min_relative * abs(median):
                found.append(
                    Outlier(
                        node, check, name, unit, value, median, sigma, len(values), model, verdict
                    )
                )
    return sorted(found, key=lambda o: (-abs(o.deviation), o.node, o.check, o.figure))


def _badness(difference: float, better: str) -> float:
    """How far a difference from the median is on the bad side (<= 0 when on the good one)."""
    return -difference if better == "higher" else difference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JUnit files (or merged ones)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"robust standard deviations (1.4826 MAD) from the median (default {THRESHOLD})",
    )
    parser.add_argument(
        "--min-relative",
        type=float,
        default=MIN_RELATIVE,
        help=f"and at least this fraction of the median (default {MIN_RELATIVE})",
    )
    parser.add_argument(
        "--min-runs",
        type=int,
        default=MIN_RUNS,
        help=f"compare a figure only across at least this many runs (default {MIN_RUNS})",
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = load_report(args.files)
    except ReportError as err:
        print(f"harness report outliers: {err}", file=sys.stderr)
        return 2
    found = fleet_outliers(
        report, threshold=args.threshold, min_relative=args.min_relative, min_runs=args.min_runs
    )
    for outlier in found:
        print(outlier.line)
    runs = len(report.runs)
    print(
        f"{len(found)} fleet outlier(s) among {runs} runs"
        if found
        else f"no fleet outliers among {runs} runs"
    )
    return 1 if found else 0
