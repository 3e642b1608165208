"""JUnit files read into one model: runs (a node, or a rank of a node), their test cases, and the
figures the harness recorded as ``metric.*`` properties.

This is the one place that parses the harness's JUnit conventions (their names are
``harness.properties``); merge, summary, diff and outliers all read through it.

- A *run* is one ``<testsuite>``: its ``node`` is ``node.host`` (a ``--fake-node`` snapshot's
  host) or else ``host`` or else the suite's ``hostname``; its ``rank`` comes from the ``rank``
  property that torchrun runs carry.
- A *case* is identified across runs by its ``check`` (``classname::name``); its outcome is
  ``passed``, ``failed``, ``error`` or ``skipped``.
- A *figure* is ``metric.<name>`` = ``"<number> <unit>"``, with optional ``.reference``
  (``"<number> <unit>"``), ``.tolerance`` (text, ``"-15%/+10%"``, ``"10%"`` or
  ``"-1.1%/no upper limit"``), ``.verdict`` (``pass``, ``warn``, ``fail``) and ``.gpu`` (the
  UUIDs of the GPUs it belongs to); a run's ``gpus`` label those UUIDs from its suite
  properties (``node.gpu.<i>.*`` and ``gpu.<i>.*``).
- A merged file (``harness.report.merge``) prefixes every classname with its run's label, to keep
  (classname, name) unique across nodes, and records the prefix as the suite property
  ``merge.classname_prefix``; it is taken off again here, so a check reads the same in a merged
  file as in the node's own.
"""

from __future__ import annotations

import functools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import properties
from harness.gpus import Gpu, normalise_uuid

Outcome = str  # "passed" | "failed" | "error" | "skipped"
OUTCOMES = ("passed", "failed", "error", "skipped")


# The suite property of a merged file naming the prefix its classnames carry.
CLASSNAME_PREFIX = properties.MERGE_PREFIX


class ReportError(ValueError):
    """A JUnit file that cannot be read; the message is one line naming the file."""


@dataclass(frozen=True)
class Figure:
    """One measured number of one case."""

    name: str
    value: float
    unit: str
    reference: float | None = None
    tolerance: str | None = None
    verdict: str | None = None
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs it belongs to; () for a node-wide figure

    @property
    def text(self) -> str:
        return quantity(self.value, self.unit)

    def tolerance_pct(self) -> tuple[float, float] | None:
        """(below, above) in percent, from ``"-15%/+10% (warn beyond 5%)"`` or ``"10%"``."""
        return None if self.tolerance is None else parse_tolerance(self.tolerance)


@dataclass(frozen=True)
class Case:
    check: str  # "classname::name", the same check across nodes and nights
    classname: str
    name: str
    outcome: Outcome
    message: str = ""  # the failure/error/skip message
    details: str = ""  # the element's text: traceback or longer reason
    time: float = 0.0
    properties: tuple[tuple[str, str], ...] = ()
    figures: tuple[Figure, ...] = ()


@dataclass(frozen=True)
class Run:
    """One ``<testsuite>`` of one file: a node, or one rank of a node."""

    source: str  # the file it came from
    suite_name: str
    node: str
    rank: str | None
    timestamp: str
    hostname: str
    time: float
    properties: tuple[tuple[str, str], ...]
    cases: tuple[Case, ...]

    @property
    def label(self) -> str:
        """``node`` or ``node/rank<R>``: unique per run in a merged report."""
        return self.node if self.rank is None else f"{self.node}/rank{self.rank}"

    def prop(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.properties:
            if key == name:
                return value
        return default

    @property
    def gpu_model(self) -> str | None:
        """The node's first GPU model as NVML or torch named it, or None on a CPU run."""
        return self.prop(properties.node_gpu(0, "name")) or self.prop(
            properties.cuda_gpu(0, "name")
        )

    def gpu(self, uuid: str) -> Gpu:
        """The GPU ``uuid`` names, as the run's suite properties describe it (only its UUID
        where they do not)."""
        known = self.gpus.get(normalise_uuid(uuid).lower())
        return known if known is not None else Gpu(normalise_uuid(uuid), "", "")

    @functools.cached_property
    def gpus(self) -> dict[str, Gpu]:
        """The GPUs the suite properties list, by lower-case UUID, both indices merged."""
        return _gpu_table(self.properties)


@dataclass
class Report:
    runs: list[Run] = field(default_factory=list)

    def cases(self) -> Iterator[tuple[Run, Case]]:
        for run in self.runs:
            for case in run.cases:
                yield run, case

    def checks(self) -> list[str]:
        """Every check, in first-seen order."""
        return list(dict.fromkeys(case.check for _, case in self.cases()))

    def nodes(self) -> list[str]:
        return list(dict.fromkeys(run.label for run in self.runs))


def load_report(paths: Iterable[str | Path]) -> Report:
    """Every ``<testsuite>`` of every file, in order. Raises ``ReportError`` naming the first
    file that is missing, unreadable, not XML or not JUnit."""
    report = Report()
    for path in paths:
        report.runs += load_runs(path)
    return report


def load_runs(path: str | Path) -> list[Run]:
    path = Path(path)
    return [parse_run(path, suite, i) for i, suite in enumerate(read_suites(path))]


def read_suites(path: str | Path) -> list[ET.Element]:
    """The top-level ``<testsuite>`` elements of a JUnit file (a ``<testsuites>`` root or one
    ``<testsuite>``). Raises ``ReportError`` naming the file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    except ET.ParseError as err:
        raise ReportError(f"{path}: not valid XML: {err}") from None
    if root.tag == "testsuite":
        return [root]
    if root.tag == "testsuites":
        return root.findall("testsuite")
    raise ReportError(f"{path}: not a JUnit file: root element is <{root.tag}>")


def parse_run(path: str | Path, suite: ET.Element, index: int) -> Run:
    """One ``<testsuite>`` element (the ``index``-th of ``path``) as a ``Run``."""
    path = Path(path)
    pairs = _properties(suite)
    props = dict(pairs)
    where = f"{path}: testsuite[{index}]"
    node = (
        props.get(properties.NODE_HOST)
        or props.get(properties.HOST)
        or suite.get("hostname")
        or path.stem
    )
    prefix = props.get(CLASSNAME_PREFIX, "")
    elements = suite.iter("testcase")
    cases = tuple(_case(f"{where}.testcase[{i}]", c, prefix) for i, c in enumerate(elements))
    return Run(
        source=str(path),
        suite_name=suite.get("name", ""),
        node=node,
        rank=props.get(properties.RANK),
        timestamp=suite.get("timestamp", ""),
        hostname=suite.get("hostname", ""),
        time=_float(where, "time", suite.get("time", "0")),
        properties=pairs,
        cases=cases,
    )


_GPU_ROW = re.compile(r"(node\.gpu|gpu)\.(\d+)\.(\w+)")


def _gpu_table(props: Iterable[tuple[str, str]]) -> dict[str, Gpu]:
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for key, value in props:
        match = _GPU_ROW.fullmatch(key)
        if match:
            rows.setdefault((match[1], int(match[2])), {})[match[3]] = value
    table: dict[str, Gpu] = {}
    for (kind, index), row in rows.items():
        if "uuid" not in row:
            continue
        key = normalise_uuid(row["uuid"]).lower()
        nvml = index if kind == "node.gpu" else _int(row.get("nvml_index"))
        cuda = index if kind == "gpu" else _int(row.get("cuda_index"))
        old = table.get(key)
        table[key] = Gpu(
            row["uuid"],
            row.get("name", "") or (old.name if old else ""),
            row.get("pci_bus_id", "") or (old.pci_bus_id if old else ""),
            nvml if nvml is not None else (old.nvml_index if old else None),
            cuda if cuda is not None else (old.cuda_index if old else None),
        )
    return table


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _properties(element: ET.Element) -> tuple[tuple[str, str], ...]:
    container = element.find("properties")
    if container is None:
        return ()
    return tuple((p.get("name", ""), p.get("value", "")) for p in container.findall("property"))


def _case(where: str, element: ET.Element, prefix: str = "") -> Case:
    classname = element.get("classname", "")
    if prefix and classname.startswith(prefix):
        classname = classname.removeprefix(prefix)
    name = element.get("name")
    if name is None:
        raise ReportError(f"{where}: testcase without a name")
    outcome, message, details = "passed", "", ""
    for tag, result in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        child = element.find(tag)
        if child is not None:
            outcome = result
            message = child.get("message", "")
            details = (child.text or "").strip()
            break
    pairs = _properties(element)
    return Case(
        check=f"{classname}::{name}" if classname else name,
        classname=classname,
        name=name,
        outcome=outcome,
        message=message,
        details=details,
        time=_float(where, "time", element.get("time", "0")),
        properties=pairs,
        figures=tuple(figures(where, pairs)),
    )


# The harness writes "<number> <unit>"; the space keeps "1,5 GB/s" from reading as 1 ",5 GB/s".
_QUANTITY = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)(?:\s+(.*))?")


def parse_quantity(text: str) -> tuple[float, str]:
    """``"92 GB/s"`` -> ``(92.0, "GB/s")``; ``"3"`` -> ``(3.0, "")``. ValueError otherwise."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"not a number with a unit: {text!r}")
    return float(match.group(1)), (match.group(2) or "").strip()


_TOLERANCE = re.compile(
    r"\s*-?(\d+\.?\d*)%(?:\s*/\s*(?:\+?(\d+\.?\d*)%|(no upper limit)))?(?:\s*\(.*\))?\s*"
)


def parse_tolerance(text: str) -> tuple[float, float] | None:
    """``"-15%/+10%"`` -> ``(15.0, 10.0)``; ``"10%"`` -> ``(10.0, 10.0)``;
    ``"-1.1%/no upper limit"`` -> ``(1.1, inf)``; None if none of these."""
    match = _TOLERANCE.fullmatch(text)
    if match is None:
        return None
    below = float(match.group(1))
    if match.group(3):
        return below, math.inf
    return below, below if match.group(2) is None else float(match.group(2))


def figures(where: str, props: Iterable[tuple[str, str]]) -> Iterator[Figure]:
    """The ``metric.*`` figures among a case's properties, in recorded order."""
    found = dict(props)
    for key, text in found.items():
        split = properties.split_figure(key)
        if split is None or split[1] is not None:
            continue
        name = split[0]
        try:
            value, unit = parse_quantity(text)
            reference = found.get(properties.figure(name, properties.REFERENCE))
            reference_value = None if reference is None else parse_quantity(reference)[0]
        except ValueError as err:
            raise ReportError(f"{where}: property {key}: {err}") from None
        owners = found.get(properties.figure(name, properties.FIGURE_GPU), "")
        yield Figure(
            name,
            value,
            unit,
            reference_value,
            found.get(properties.figure(name, properties.TOLERANCE)),
            found.get(properties.figure(name, properties.VERDICT)),
            tuple(uuid.strip() for uuid in owners.split(",") if uuid.strip()),
        )


def _float(where: str, attribute: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ReportError(f"{where}: {attribute}={text!r} is not a number") from None
    return value if math.isfinite(value) else 0.0


Direction = str  # "higher" (higher is better), "lower" (lower is better) or "either"

# Units of durations and temperatures: more is worse. Rates (anything per second: GB/s, TFLOP/s,
# samples/s) and the largest batch that fits: less is worse. Everything else (memory amounts,
# counts, plain numbers) has no better side on its own: a GPU that differs from identical
# peers, or from last night, either way is the news.
_LOWER_IS_BETTER = {"ns", "us", "µs", "ms", "s", "C"}
_HIGHER_IS_BETTER = {"samples"}


def direction(unit: str) -> Direction:
    """Which way a figure in ``unit`` gets better: ``"higher"``, ``"lower"`` or ``"either"``."""
    if unit in _LOWER_IS_BETTER:
        return "lower"
    if unit.endswith("/s") or unit in _HIGHER_IS_BETTER:
        return "higher"
    return "either"


def quantity(value: float, unit: str) -> str:
    """``2930.5 GB/s``: six significant digits and the unit, as the harness writes figures."""
    number = f"{value:.6g}"
    return f"{number} {unit}" if unit else number
