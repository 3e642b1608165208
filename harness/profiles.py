"""Node profiles: what a node is expected to have, and how fast it is expected to be.

A profile is a TOML file. The shipped ones live in ``profiles/`` at the top of the checkout;
``load_profile("h200-1x")`` reads ``profiles/h200-1x.toml``, and anything that looks like a
path (contains a path separator or ends in ``.toml``) is read as that file. ::

    name = "h200-1x"                      # required, string
    description = "One H200 SXM ..."      # required, string

    [inventory]                           # required
    gpu_count = 1                         # required, int >= 0; 0: a CPU-only node, and
                                          #   then every other inventory key is optional
    gpu_model = "H200(?! NVL)"            # regex searched in the NVML name ("NVIDIA H200");
                                          #   a plain substring is a regex too
    min_memory_mib = 140000               # per GPU, int > 0
    min_driver = "550.54"                 # dotted numbers, compared numerically
    pcie_generation = 5                   # int >= 1
    pcie_width = 16                       # int >= 1
    nvlink_links = 0                      # per GPU, int >= 0; 0: none expected

    [performance.d2d_copy_bandwidth]      # optional; one table per metric in METRICS
    value = 4200.0                        # required, > 0, the reference
    unit = "GB/s"                         # required, must be the metric's unit in METRICS
    lower_pct = 15                        # required, >= 0: allowed deviation below, percent
    upper_pct = 10                        # required, >= 0: allowed deviation above, percent
    warn_pct = 5                          # optional, >= 0 and <= both tolerances: a deviation
                                          #   beyond it (inside the tolerance) is a warning
    required = true                       # optional, default true (see below)

    [health]                              # optional
    max_temperature_c = 80                # optional, int > 0: a GPU hotter than this is a fault
    slowdown_margin_c = 5                 # optional, int >= 0, default 5: a GPU must also stay
                                          #   this far below NVML's slowdown threshold

    [required]                            # optional
    checks = ["inventory.gpu_count", "health.ecc"]

Check names. A test that implements a check is marked ``@pytest.mark.required_check(NAME)``.
Under ``--acceptance`` a skip of a test whose check the profile requires is a failure (a check
that could not run must not pass silently). The profile requires the names listed in
``[required].checks`` plus ``performance.<metric>`` for every metric whose ``required`` is true.
Names are free dotted strings agreed between suites and profiles: ``inventory.*``,
``health.*``, ``performance.<metric>``. Listing ``performance.<metric>`` in ``[required]`` for a
metric the profile lacks, or has marked ``required = false``, is an error.

Every problem is a ``ProfileError`` whose message is one line naming the file and the key:
``profiles/h100.toml: performance.d2d_copy_bandwidth.lower_pct: must be >= 0, got -5``.

``Reference.judge(measured)`` is the verdict on one figure: ``fail`` outside
``[value * (1 - lower_pct/100), value * (1 + upper_pct/100)]`` (bounds included in the pass),
``warn`` inside it but beyond ``warn_pct`` from the value, else ``pass``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

PROFILES_DIR = Path(__file__).resolve().parents[1] / "profiles"

# The metrics a profile may give references for, with their units.
METRICS: dict[str, str] = {
    "d2d_copy_bandwidth": "GB/s",  # device-to-device copy, read + write bytes counted
    "h2d_pinned_bandwidth": "GB/s",
    "d2h_pinned_bandwidth": "GB/s",
    "p2p_bandwidth": "GB/s",  # one direction, per GPU pair
    "allreduce_busbw": "GB/s",  # nccl-tests' bus bandwidth
    "bf16_matmul_tflops": "TFLOP/s",
    "fp32_matmul_tflops": "TFLOP/s",
}

Status = Literal["pass", "warn", "fail"]


class ProfileError(ValueError):
    """A profile that cannot be found, read or validated; the message is one line."""


@dataclass(frozen=True)
class Verdict:
    """The judgement of one measured figure against its reference."""

    status: Status
    measured: float
    reference: float
    low: float
    high: float
    unit: str
    lower_pct: float
    upper_pct: float
    warn_pct: float | None

    @property
    def tolerance(self) -> str:
        """``-15%/+10%``, and the warning band when there is one: ``-15%/+10% (warn beyond 5%)``."""
        text = f"-{_num(self.lower_pct)}%/+{_num(self.upper_pct)}%"
        if self.warn_pct is not None:
            text += f" (warn beyond {_num(self.warn_pct)}%)"
        return text

    @property
    def text(self) -> str:
        """One line: ``3500 GB/s: fail, below 3570 GB/s (reference 4200 GB/s, -15%/+10%)``."""
        where = ""
        if self.measured < self.low:
            where = f", below {_q(self.low, self.unit)}"
        elif self.measured > self.high:
            where = f", above {_q(self.high, self.unit)}"
        elif self.status == "warn":
            where = f", more than {_num(self.warn_pct or 0)}% from the reference"
        return (
            f"{_q(self.measured, self.unit)}: {self.status}{where} "
            f"(reference {_q(self.reference, self.unit)}, {self.tolerance})"
        )

    def properties(self, name: str) -> list[tuple[str, str]]:
        """JUnit properties: ``metric.<name>`` and its ``.reference``, ``.tolerance``,
        ``.verdict``, each with units where they have one."""
        key = f"metric.{name}"
        return [
            (key, _q(self.measured, self.unit)),
            (f"{key}.reference", _q(self.reference, self.unit)),
            (f"{key}.tolerance", self.tolerance),
            (f"{key}.verdict", self.status),
        ]


@dataclass(frozen=True)
class Reference:
    """An expected figure with its allowed deviation below and above, in percent."""

    value: float
    unit: str
    lower_pct: float
    upper_pct: float
    warn_pct: float | None = None
    required: bool = True

    @property
    def low(self) -> float:
        return self.value * (100 - self.lower_pct) / 100

    @property
    def high(self) -> float:
        return self.value * (100 + self.upper_pct) / 100

    def judge(self, measured: float) -> Verdict:
        status: Status
        if not self.low <= measured <= self.high:  # NaN fails too
            status = "fail"
        elif self.warn_pct is not None and not (
            self.value * (100 - self.warn_pct) / 100
            <= measured
            <= self.value * (100 + self.warn_pct) / 100
        ):
            status = "warn"
        else:
            status = "pass"
        return Verdict(
            status,
            measured,
            self.value,
            self.low,
            self.high,
            self.unit,
            self.lower_pct,
            self.upper_pct,
            self.warn_pct,
        )


@dataclass(frozen=True)
class Inventory:
    """What the node must have. GPU fields are None on a CPU-only profile (``gpu_count = 0``)."""

    gpu_count: int
    gpu_model: str | None = None
    min_memory_mib: int | None = None
    min_driver: str | None = None
    pcie_generation: int | None = None
    pcie_width: int | None = None
    nvlink_links: int | None = None

    def model_matches(self, nvml_name: str) -> bool:
        return self.gpu_model is not None and re.search(self.gpu_model, nvml_name) is not None

    def driver_ok(self, version: str) -> bool:
        """Whether ``version`` (``"580.65.06"``) is at least ``min_driver``, numerically."""
        if self.min_driver is None:
            return True
        return version_tuple(version) >= version_tuple(self.min_driver)


DEFAULT_SLOWDOWN_MARGIN_C = 5


@dataclass(frozen=True)
class Health:
    """Health limits beyond what NVML states about the GPU itself."""

    max_temperature_c: int | None = None
    slowdown_margin_c: int = DEFAULT_SLOWDOWN_MARGIN_C


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: Path
    inventory: Inventory
    performance: Mapping[str, Reference]
    required_checks: frozenset[str]
    health: Health = Health()

    def requires(self, check: str) -> bool:
        """Whether ``--acceptance`` turns a skip of ``check`` into a failure."""
        return check in self.required_checks


def version_tuple(version: str) -> tuple[int, ...]:
    """``"550.54.15"`` -> ``(550, 54, 15)``; trailing zeros do not matter in comparisons."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ValueError(f"not a dotted version: {version!r}")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(".toml"):
        return Path(name_or_path)
    return PROFILES_DIR / f"{text}.toml"


def load_profile(name_or_path: str | Path) -> Profile:
    """The profile a shipped NAME or a PATH names, validated; ``ProfileError`` otherwise."""
    path = resolve_profile_path(name_or_path)
    where = _display(path)
    if not path.is_file():
        if path.parent == PROFILES_DIR:
            shipped = ", ".join(shipped_profiles()) or "none"
            raise ProfileError(
                f"--profile {name_or_path}: no such profile (shipped: {shipped}) and no such file"
            )
        raise ProfileError(f"{where}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        raise ProfileError(f"{where}: not valid TOML: {_one_line(err)}") from None
    return _Parser(where, path).profile(data)


class _Parser:
    def __init__(self, where: str, path: Path) -> None:
        self.where = where
        self.path = path

    def error(self, key: str, message: str) -> ProfileError:
        return ProfileError(f"{self.where}: {key}: {message}")

    def table(self, data: Mapping[str, Any], key: str, allowed: set[str]) -> None:
        for name in data:
            if name not in allowed:
                full = f"{key}.{name}" if key else name
                raise self.error(full, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def get(self, data: Mapping[str, Any], key: str, name: str, kind: str, *, required: bool):
        full = f"{key}.{name}" if key else name
        if name not in data:
            if required:
                raise self.error(full, "missing")
            return None
        value = data[name]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "table": isinstance(value, dict),
            "list": isinstance(value, list),
        }[kind]
        if not ok:
            expected = {"number": "a number", "int": "an integer", "table": "a table"}.get(
                kind, f"a {kind}"
            )
            raise self.error(full, f"must be {expected}, got {_toml_type(value)} {value!r}")
        if kind == "number" and not math.isfinite(value):
            raise self.error(full, f"must be finite, got {value!r}")
        return value

    def at_least(self, key: str, value: float | None, minimum: float) -> None:
        if value is not None and value < minimum:
            raise self.error(key, f"must be >= {_num(minimum)}, got {_num(value)}")

    def profile(self, data: Mapping[str, Any]) -> Profile:
        self.table(
            data, "", {"name", "description", "inventory", "performance", "health", "required"}
        )
        name = self.get(data, "", "name", "str", required=True)
        if not name.strip():
            raise self.error("name", "must not be empty")
        description = self.get(data, "", "description", "str", required=True)
        inventory = self.inventory(self.get(data, "", "inventory", "table", required=True))
        performance_data = self.get(data, "", "performance", "table", required=False) or {}
        performance: dict[str, Reference] = {}
        for metric, table in performance_data.items():
            key = f"performance.{metric}"
            if metric not in METRICS:
                raise self.error(key, f"unknown metric (known: {', '.join(sorted(METRICS))})")
            if not isinstance(table, dict):
                raise self.error(key, f"must be a table, got {_toml_type(table)} {table!r}")
            performance[metric] = self.reference(key, metric, table)
        health = self.health(self.get(data, "", "health", "table", required=False) or {})
        checks = self.required(data, performance)
        checks |= {f"performance.{m}" for m, ref in performance.items() if ref.required}
        return Profile(
            name, description, self.path, inventory, performance, frozenset(checks), health
        )

    def health(self, data: Mapping[str, Any]) -> Health:
        key = "health"
        self.table(data, key, {"max_temperature_c", "slowdown_margin_c"})
        limit = self.get(data, key, "max_temperature_c", "int", required=False)
        self.at_least(f"{key}.max_temperature_c", limit, 1)
        margin = self.get(data, key, "slowdown_margin_c", "int", required=False)
        self.at_least(f"{key}.slowdown_margin_c", margin, 0)
        return Health(limit, DEFAULT_SLOWDOWN_MARGIN_C if margin is None else margin)

    def inventory(self, data: Mapping[str, Any]) -> Inventory:
        key = "inventory"
        fields = {
            "gpu_model": "str",
            "min_memory_mib": "int",
            "min_driver": "str",
            "pcie_generation": "int",
            "pcie_width": "int",
            "nvlink_links": "int",
        }
        self.table(data, key, {"gpu_count", *fields})
        gpu_count = self.get(data, key, "gpu_count", "int", required=True)
        self.at_least(f"{key}.gpu_count", gpu_count, 0)
        values = {
            name: self.get(data, key, name, kind, required=gpu_count > 0)
            for name, kind in fields.items()
        }
        self.at_least(f"{key}.min_memory_mib", values["min_memory_mib"], 1)
        self.at_least(f"{key}.pcie_generation", values["pcie_generation"], 1)
        self.at_least(f"{key}.pcie_width", values["pcie_width"], 1)
        self.at_least(f"{key}.nvlink_links", values["nvlink_links"], 0)
        if values["gpu_model"] is not None:
            if not values["gpu_model"].strip():
                raise self.error(f"{key}.gpu_model", "must not be empty")
            try:
                re.compile(values["gpu_model"])
            except re.error as err:
                raise self.error(f"{key}.gpu_model", f"not a valid regex: {err}") from None
        if values["min_driver"] is not None:
            try:
                version_tuple(values["min_driver"])
            except ValueError:
                raise self.error(
                    f"{key}.min_driver",
                    f'must be a dotted version such as "550.54", got {values["min_driver"]!r}',
                ) from None
        return Inventory(gpu_count, **values)

    def reference(self, key: str, metric: str, data: Mapping[str, Any]) -> Reference:
        self.table(data, key, {"value", "unit", "lower_pct", "upper_pct", "warn_pct", "required"})
        value = self.get(data, key, "value", "number", required=True)
        if value <= 0:
            raise self.error(f"{key}.value", f"must be > 0, got {_num(value)}")
        unit = self.get(data, key, "unit", "str", required=True)
        if unit != METRICS[metric]:
            raise self.error(f"{key}.unit", f"must be {METRICS[metric]!r}, got {unit!r}")
        lower = self.get(data, key, "lower_pct", "number", required=True)
        self.at_least(f"{key}.lower_pct", lower, 0)
        if lower > 100:
            raise self.error(f"{key}.lower_pct", f"must be <= 100, got {_num(lower)}")
        upper = self.get(data, key, "upper_pct", "number", required=True)
        self.at_least(f"{key}.upper_pct", upper, 0)
        warn = self.get(data, key, "warn_pct", "number", required=False)
        self.at_least(f"{key}.warn_pct", warn, 0)
        if warn is not None and warn > min(lower, upper):
            raise self.error(
                f"{key}.warn_pct",
                f"must lie inside the tolerance (<= min(lower_pct, upper_pct) = "
                f"{_num(min(lower, upper))}), got {_num(warn)}",
            )
        required = self.get(data, key, "required", "bool", required=False)
        return Reference(
            float(value),
            unit,
            float(lower),
            float(upper),
            None if warn is None else float(warn),
            True if required is None else required,
        )

    def required(self, data: Mapping[str, Any], performance: Mapping[str, Reference]) -> set[str]:
        table = self.get(data, "", "required", "table", required=False)
        if table is None:
            return set()
        self.table(table, "required", {"checks"})
        checks = self.get(table, "required", "checks", "list", required=True)
        for i, check in enumerate(checks):
            key = f"required.checks[{i}]"
            if not isinstance(check, str) or not check.strip():
                raise self.error(key, f"must be a non-empty string, got {check!r}")
            if check.startswith("performance."):
                metric = check.removeprefix("performance.")
                if metric not in performance:
                    raise self.error(key, f"{check!r} has no [performance.{metric}] table")
                if not performance[metric].required:
                    raise self.error(
                        key, f"{check!r} is listed but [performance.{metric}] says required = false"
                    )
        return set(checks)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _toml_type(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _q(value: float, unit: str) -> str:
    return f"{_num(value)} {unit}" if unit else _num(value)
