"""Plots of a report's figures for the HTML summary: one per metric, spread across nodes.

Only figures a person compares by eye are plotted: rates (GB/s, TFLOP/s) wherever they were
measured, and memory sizes measured per device. A figure's device comes from its case's
parameter id (``test_x[cuda:3]``, a pair ``test_x[cuda:0-cuda:1]``) or from its name
(``memory_step_peak.cuda3``). Each plot is a PNG embedded as a ``data:`` URI, so the page needs
nothing from outside. matplotlib (the ``report`` extra) is imported only here, with the Agg
backend: no display is needed.
"""

from __future__ import annotations

import base64
import io
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from harness.report.model import Case, Figure, Report, Run

RATE_UNITS = {"GB/s": "Bandwidth", "TFLOP/s": "Compute"}
MEMORY_UNITS = ("MiB", "GiB", "GB", "MB")

_PAIR = re.compile(r"(cuda:\d+)-(cuda:\d+)")
_DEVICE = re.compile(r"cuda:\d+")
_NAME_DEVICE = re.compile(r"(.+)\.cuda(\d+)")

VERDICT_COLOURS = {"pass": "#2da44e", "warn": "#d4a72c", "fail": "#cf222e", None: "#0969da"}


@dataclass(frozen=True)
class Point:
    node: str
    device: str  # "cuda:3", "cuda:0-cuda:1", or the case id when neither is known
    value: float
    low: float | None  # the tolerance band, when the figure was judged
    reference: float | None
    high: float | None
    verdict: str | None
    outlier: bool


@dataclass(frozen=True)
class Plot:
    section: str  # "Bandwidth", "Compute", "Memory"
    title: str
    caption: str
    image: str  # data:image/png;base64,...


def figure_device(case: Case, figure: Figure) -> tuple[str, str | None]:
    """(metric, device): ``memory_step_peak.cuda3`` is metric ``memory_step_peak`` on
    ``cuda:3``; otherwise the device (or ``src-dst`` pair) in the case's parameter id."""
    match = _NAME_DEVICE.fullmatch(figure.name)
    if match is not None:
        return match.group(1), f"cuda:{match.group(2)}"
    params = case.name.partition("[")[2]
    pair = _PAIR.search(params)
    if pair is not None:
        return figure.name, pair.group(0)
    device = _DEVICE.search(params)
    return figure.name, None if device is None else device.group(0)


def collect_points(
    report: Report, is_outlier: Callable[[Run, Case, Figure], bool]
) -> dict[tuple[str, str], list[Point]]:
    """Plottable points by (metric, unit), in report order."""
    points: dict[tuple[str, str], list[Point]] = {}
    for run, case in report.cases():
        for figure in case.figures:
            metric, device = figure_device(case, figure)
            if figure.unit not in RATE_UNITS and (figure.unit not in MEMORY_UNITS or not device):
                continue
            band = _band(figure)
            points.setdefault((metric, figure.unit), []).append(
                Point(
                    node=run.node,
                    device=device or case.name,
                    value=figure.value,
                    low=band[0],
                    reference=figure.reference,
                    high=band[1],
                    verdict=figure.verdict,
                    outlier=is_outlier(run, case, figure),
                )
            )
    return points


def _band(figure: Figure) -> tuple[float | None, float | None]:
    tolerance = figure.tolerance_pct()
    if figure.reference is None or tolerance is None:
        return None, None
    below, above = tolerance
    return figure.reference * (1 - below / 100), figure.reference * (1 + above / 100)


def render_plots(
    report: Report,
    nodes: list[str],
    is_outlier: Callable[[Run, Case, Figure], bool] = lambda run, case, figure: False,
) -> list[Plot]:
    """Every plot of the report, bandwidth first, then compute, then memory; ``nodes`` is the
    order of the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    plots = []
    for (metric, unit), points in collect_points(report, is_outlier).items():
        section = RATE_UNITS.get(unit, "Memory")
        pairs = all(_PAIR.fullmatch(point.device) for point in points)
        per = "per GPU pair" if pairs else "per GPU" if _per_device(points) else "per node"
        plots.append(
            Plot(
                section,
                f"{metric} ({unit}) {per}, across nodes",
                _caption(points, per),
                _strip_plot(metric, unit, points, nodes),
            )
        )
        if pairs and len({point.device for point in points}) > 1:
            plots.append(
                Plot(
                    section,
                    f"{metric} ({unit}) by node and GPU pair",
                    "Each cell is one direction of one link; x marks a pair outside its "
                    "tolerance, ⚑ a fleet outlier. Colour: the value against the fleet median "
                    "of the same pair.",
                    _pair_heatmap(metric, unit, points, nodes),
                )
            )
    order = [*RATE_UNITS.values(), "Memory"]
    return sorted(plots, key=lambda plot: order.index(plot.section))


def _per_device(points: list[Point]) -> bool:
    return all(_DEVICE.fullmatch(point.device) for point in points)


def _caption(points: list[Point], per: str) -> str:
    what = {"per GPU pair": "GPU pair", "per GPU": "GPU"}.get(per, "measurement")
    text = f"One dot per {what} and node ({len(points)} in all), coloured by its verdict"
    if any(point.reference is None for point in points):
        text += " (blue: recorded without a reference)"
    return text + "; ringed: a fleet outlier. Dotted: the fleet median."


def _strip_plot(metric: str, unit: str, points: list[Point], nodes: list[str]) -> str:
    from matplotlib.figure import Figure as MplFigure

    columns = [node for node in nodes if any(point.node == node for point in points)]
    x_of = {node: i for i, node in enumerate(columns)}
    devices = list(dict.fromkeys(point.device for point in points))
    offset = {
        device: (i - (len(devices) - 1) / 2) * (0.7 / max(len(devices), 1))
        for i, device in enumerate(devices)
    }
    fig = MplFigure(figsize=(min(max(7.0, 0.45 * len(columns) + 3.5), 16.0), 3.8), dpi=100)
    ax = fig.add_subplot()
    bands = {(p.low, p.reference, p.high) for p in points if p.reference is not None}
    if len(bands) == 1:  # one reference for the fleet: one band across the plot
        low, reference, high = bands.pop()
        if low is not None and high is not None:
            ax.axhspan(low, high, color="#d0d7de", alpha=0.45, lw=0, label="tolerance")
        ax.axhline(reference, color="#24292f", lw=1.2, label="reference")
    else:  # nodes judged against different references (GPU models, profiles): one per node
        for node in columns:
            judged = [p for p in points if p.node == node and p.reference is not None]
            x = x_of[node]
            for p in judged[:1]:
                if p.low is not None and p.high is not None:
                    ax.fill_between([x - 0.45, x + 0.45], p.low, p.high, color="#d0d7de", lw=0)
                ax.hlines(p.reference, x - 0.45, x + 0.45, colors="#24292f", lw=1.2)
    median = statistics.median(point.value for point in points)
    ax.axhline(median, color="#8c959f", lw=1, ls=":", label="fleet median")
    for verdict, colour in VERDICT_COLOURS.items():
        chosen = [p for p in points if p.verdict == verdict]
        if chosen:
            ax.scatter(
                [x_of[p.node] + offset[p.device] for p in chosen],
                [p.value for p in chosen],
                s=22,
                c=colour,
                zorder=3,
                label=verdict or "not judged",
            )
    outliers = [p for p in points if p.outlier]
    if outliers:
        ax.scatter(
            [x_of[p.node] + offset[p.device] for p in outliers],
            [p.value for p in outliers],
            s=110,
            facecolors="none",
            edgecolors="#24292f",
            linewidths=1.5,
            zorder=4,
            label="fleet outlier",
        )
    ax.set_xticks(range(len(columns)), columns, rotation=60 if len(columns) > 6 else 0, ha="right")
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylabel(unit)
    ax.set_title(metric, fontsize=11, loc="left")
    ax.grid(axis="y", color="#eaeef2")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, loc="upper left", frameon=False, bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _pair_heatmap(metric: str, unit: str, points: list[Point], nodes: list[str]) -> str:
    import numpy as np
    from matplotlib.figure import Figure as MplFigure

    rows = [node for node in nodes if any(point.node == node for point in points)]
    pairs = sorted({point.device for point in points}, key=_pair_key)
    values = np.full((len(rows), len(pairs)), np.nan)
    marks: list[tuple[int, int, str]] = []
    for point in points:
        i, j = rows.index(point.node), pairs.index(point.device)
        values[i, j] = point.value
        if point.verdict == "fail":
            marks.append((i, j, "x"))
        elif point.outlier:
            marks.append((i, j, "⚑"))
    # Relative to each pair's fleet median: a slow link stands out whatever its topology.
    medians = np.nanmedian(values, axis=0)
    relative = values / np.where(medians > 0, medians, np.nan) * 100
    width = min(max(6.0, 0.3 * len(pairs) + 3), 13.0)
    fig = MplFigure(figsize=(width, max(2.6, 0.3 * len(rows) + 1.7)), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(relative, aspect="auto", cmap="RdYlGn", vmin=80, vmax=105)
    fig.colorbar(image, ax=ax, label="% of the pair's fleet median", shrink=0.9)
    labels = [pair.replace("cuda:", "").replace("-", "→") for pair in pairs]
    ax.set_xticks(range(len(pairs)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i, j, mark in marks:
        ax.text(j, i, mark, ha="center", va="center", fontsize=9, color="#24292f")
    ax.set_xlabel("source → destination GPU")
    ax.set_title(f"{metric} ({unit})", fontsize=11, loc="left")
    return _png(fig)


def _pair_key(pair: str) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", pair))


def _png(fig) -> str:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
