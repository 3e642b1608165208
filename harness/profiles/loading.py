"""Reading a profile: one TOML file, validated key by key.

A profile names what a node is expected to have and how fast it is expected to be::

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

    [performance.d2d_copy_bandwidth]      # optional; one table per figure in checks.FIGURES
    value = 4200.0                        # required, > 0, the reference
    unit = "GB/s"                         # required, must be the figure's unit
    lower_pct = 15                        # required, 0..100: allowed deviation below, percent
    upper_pct = 10                        # required, >= 0: allowed deviation above, percent
    warn_pct = 5                          # optional, >= 0 and <= both tolerances: a deviation
                                          #   beyond it (inside the tolerance) is a warning
    required = true                       # optional, default true: performance.<figure> is
                                          #   then a required check

    [health]                              # optional
    max_temperature_c = 80                # optional, int > 0: a GPU hotter than this is a fault
    slowdown_margin_c = 5                 # optional, int >= 0, default 5: a GPU must also stay
                                          #   this far below NVML's slowdown threshold

    [required]                            # optional
    checks = ["inventory.gpu_count", "health.ecc"]   # names from harness.checks.Check

Every problem is a ``ProfileError`` whose message is one line naming the file and the key:
``h100.toml: performance.d2d_copy_bandwidth.lower_pct: must be >= 0, got -5``;
``h100.toml: required.checks[3]: unknown check 'healt.ecc' (did you mean 'health.ecc'?)``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from harness.checks import FIGURES, Check, is_check, performance_check, unknown_check
from harness.profiles.model import (
    DEFAULT_SLOWDOWN_MARGIN_C,
    Health,
    Inventory,
    Profile,
    ProfileError,
    Reference,
    version_tuple,
)


def parse_profile(text: str, where: str) -> Profile:
    """The profile in TOML ``text``, read from ``where`` (named in every error)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{where}: not valid TOML: {_one_line(err)}") from None
    return _Parser(where).profile(data)


class _Parser:
    def __init__(self, where: str) -> None:
        self.where = where

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
            if metric not in FIGURES:
                raise self.error(key, f"unknown metric (known: {', '.join(sorted(FIGURES))})")
            if not isinstance(table, dict):
                raise self.error(key, f"must be a table, got {_toml_type(table)} {table!r}")
            performance[metric] = self.reference(key, metric, table)
        health = self.health(self.get(data, "", "health", "table", required=False) or {})
        checks = self.required(data, performance)
        checks |= {performance_check(m) for m, ref in performance.items() if ref.required}
        return Profile(
            name, description, self.where, inventory, performance, frozenset(checks), health
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
        if unit != FIGURES[metric]:
            raise self.error(f"{key}.unit", f"must be {FIGURES[metric]!r}, got {unit!r}")
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

    def required(self, data: Mapping[str, Any], performance: Mapping[str, Reference]) -> set[Check]:
        table = self.get(data, "", "required", "table", required=False)
        if table is None:
            return set()
        self.table(table, "required", {"checks"})
        checks = self.get(table, "required", "checks", "list", required=True)
        for i, check in enumerate(checks):
            key = f"required.checks[{i}]"
            if not isinstance(check, str) or not check.strip():
                raise self.error(key, f"must be a non-empty string, got {check!r}")
            if not is_check(check):
                raise self.error(key, unknown_check(check))
            if check.startswith("performance."):
                metric = check.removeprefix("performance.")
                if metric not in performance:
                    raise self.error(key, f"{check!r} has no [performance.{metric}] table")
                if not performance[metric].required:
                    raise self.error(
                        key, f"{check!r} is listed but [performance.{metric}] says required = false"
                    )
        return {Check(check) for check in checks}


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
