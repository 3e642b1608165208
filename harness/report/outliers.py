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
(``[cuda:3]``) or per pair is compared slot by slot, like with like. The GPUs a figure belongs
to are the UUIDs it names (``metric.<name>.gpu``), labelled from its run's suite properties.

One slow GPU makes many outliers: its own copy, host-copy and matmul figures, and every
peer-to-peer pair it takes part in, both directions. ``group_outliers`` puts a node's outliers
together and names the GPUs they point at (``OutlierGroup.headline``): the GPU in the most of
them, then, among those it does not explain, the next, as long as a GPU explains two or more or
is the only GPU of a figure. A lone slow pair names neither of its GPUs, and a figure with no GPU
slot (an all-reduce) stays listed as it is.

Figures with no better side (amounts and counts: MiB, error counters) are not compared: an ECC
counter away from a fleet median of 0 is already its own check's failure, and a different memory
size is an inventory question the profile answers. The largest batch that fits (``samples``) is
compared, fewer being worse.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from harness.gpus import Gpu
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
    owners: tuple[Gpu, ...] = ()  # the GPUs the figure belongs to: one, or a pair

    @property
    def gpus(self) -> tuple[str, ...]:
        """The UUIDs of the GPUs the figure belongs to: two for a pair, none for the node."""
        return tuple(gpu.uuid for gpu in self.owners)

    @property
    def change(self) -> str:
        """``-8.2%``, or ``from 0`` where the median is 0."""
        return f"{self.deviation:+.1%}" if self.median else "from 0"

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
    groups: dict[
        tuple[str, str, str, str], list[tuple[str, float, str | None, tuple[Gpu, ...]]]
    ] = {}
    for run, case in report.cases():
        model = run.gpu_model
        if model is None:  # a CPU run has no peers to be compared with
            continue
        for figure in case.figures:
            if direction(figure.unit) == "either":
                continue
            key = (model, case.check, figure.name, figure.unit)
            owners = tuple(run.gpu(uuid) for uuid in figure.gpus)
            groups.setdefault(key, []).append((run.label, figure.value, figure.verdict, owners))
    found = []
    for (model, check, name, unit), values in groups.items():
        if len(values) < min_runs:
            continue
        median = statistics.median(value for _, value, _, _ in values)
        sigma = MAD_SCALE * statistics.median(abs(value - median) for _, value, _, _ in values)
        for node, value, verdict, owners in values:
            bad = _badness(value - median, direction(unit))
            if bad > threshold * sigma and bad > min_relative * abs(median):
                found.append(
                    Outlier(
                        node,
                        check,
                        name,
                        unit,
                        value,
                        median,
                        sigma,
                        len(values),
                        model,
                        verdict,
                        owners,
                    )
                )
    return sorted(found, key=lambda o: (-abs(o.deviation), o.node, o.check, o.figure))


def _badness(difference: float, better: str) -> float:
    """How far a difference from the median is on the bad side (<= 0 when on the good one)."""
    return -difference if better == "higher" else difference


@dataclass(frozen=True)
class Suspect:
    """A GPU that the outliers of its node point at."""

    gpu: str  # its UUID
    outliers: tuple[Outlier, ...]  # every outlier of the node that names it, worst first

    @property
    def identity(self) -> Gpu:
        return next(g for o in self.outliers for g in o.owners if g.uuid == self.gpu)

    @property
    def label(self) -> str:
        """``GPU 3 (cuda:1, model, UUID, PCI bus id)``, as the run's properties describe it."""
        return self.identity.label

    @property
    def short_label(self) -> str:
        return self.identity.short_label

    @property
    def description(self) -> str:
        """``d2d_copy_bandwidth -10.1%, ..., p2p_bandwidth in 14 pairs -7.5% to -12.6%``: its
        own figures one by one, those it shares with other GPUs counted per figure."""
        own = [f"{o.figure} {o.change}" for o in self.outliers if len(o.gpus) == 1]
        shared: dict[str, list[Outlier]] = {}
        for o in self.outliers:
            if len(o.gpus) > 1:
                shared.setdefault(o.figure, []).append(o)
        for figure, found in shared.items():
            if len(found) == 1:
                own.append(f"{figure} {found[0].change} with {_others(found[0], self.gpu)}")
            else:
                mild, worst = sorted(found, key=lambda o: abs(o.deviation))[:: len(found) - 1]
                own.append(f"{figure} in {len(found)} pairs {mild.change} to {worst.change}")
        return ", ".join(own)


def _others(outlier: Outlier, gpu: str) -> str:
    return "+".join(g.short_label for g in outlier.owners if g.uuid != gpu)


def _pair(outlier: Outlier) -> str:
    return "-".join(g.short_label for g in outlier.owners)


@dataclass(frozen=True)
class OutlierGroup:
    """The outliers of one node, and the GPUs they point at."""

    node: str  # the node, whichever of its runs (ranks) the outliers came from
    outliers: tuple[Outlier, ...]  # worst first
    suspects: tuple[Suspect, ...]  # most outliers first

    @property
    def others(self) -> tuple[Outlier, ...]:
        """The outliers that name none of the suspects."""
        named = {suspect.gpu for suspect in self.suspects}
        return tuple(o for o in self.outliers if not named.intersection(o.gpus))

    @property
    def others_description(self) -> str:
        """``allreduce_busbw -8.1%, p2p_bandwidth -6.0% (GPU 1-GPU 4)``."""
        return ", ".join(
            f"{o.figure} {o.change}" + (f" ({_pair(o)})" if o.gpus else "") for o in self.others
        )

    @property
    def verdict(self) -> str:
        """``GPU 3 (...) is in 17 of 17 outlying figures (...)``: the headline, less the node."""
        total = len(self.outliers)
        figures = f"{total} outlying figure{'s' if total != 1 else ''}"
        if not self.suspects:
            return f"{figures}, none tied to one GPU ({self.others_description})"
        explained = total - len(self.others)
        if len(self.suspects) == 1:
            suspect = self.suspects[0]
            text = f"{suspect.label} is in {explained} of {figures} ({suspect.description})"
        else:
            names = [suspect.short_label for suspect in self.suspects]
            each = "; ".join(
                f"{s.label} in {len(s.outliers)} ({s.description})" for s in self.suspects
            )
            text = (
                f"{', '.join(names[:-1])} and {names[-1]} are in {explained} of {figures}: {each}"
            )
        if self.others:
            text += f"; {len(self.others)} tied to no one GPU ({self.others_description})"
        return text

    @property
    def headline(self) -> str:
        return f"{self.node}: {self.verdict}"


def group_outliers(outliers: Sequence[Outlier]) -> list[OutlierGroup]:
    """One group per node, in the order of each node's worst outlier."""
    by_node: dict[str, list[Outlier]] = {}
    for outlier in outliers:
        by_node.setdefault(outlier.node.split("/")[0], []).append(outlier)
    return [OutlierGroup(node, tuple(found), _suspects(found)) for node, found in by_node.items()]


def _suspects(found: list[Outlier]) -> tuple[Suspect, ...]:
    """The GPU in the most outliers, then the same among those it leaves, while a GPU is in two
    or more of them or is the only GPU of one: a single slow pair cannot say which end is slow."""
    suspects: list[Suspect] = []
    left = [o for o in found if o.gpus]
    order = {g.uuid: g.short_label for o in found for g in o.owners}
    while left:
        counts = Counter(gpu for o in left for gpu in o.gpus)
        alone = {o.gpus[0] for o in left if len(o.gpus) == 1}
        # Most outliers first, then a GPU alone in some, then the lowest index: a stable pick.
        first = sorted(counts, key=lambda g: _natural(order[g]))
        gpu = max(first, key=lambda g: (counts[g], g in alone))
        if counts[gpu] < 2 and gpu not in alone:
            break
        suspects.append(Suspect(gpu, tuple(o for o in found if gpu in o.gpus)))
        left = [o for o in left if gpu not in o.gpus]
    return tuple(suspects)


def _natural(text: str) -> tuple:
    """``GPU 10`` after ``GPU 9``: numbers compared as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


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
    for group in group_outliers(found):
        print(group.headline)
        for outlier in group.outliers:
            print(f"  {outlier.line}")
    runs = len(report.runs)
    print(
        f"{len(found)} fleet outlier(s) among {runs} runs"
        if found
        else f"no fleet outliers among {runs} runs"
    )
    return 1 if found else 0
