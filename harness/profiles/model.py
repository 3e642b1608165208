"""What a loaded profile is: inventory, health limits, references with tolerances, required
checks; and the verdict on one measured figure."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from harness import properties
from harness.checks import USABLE_MEMORY, Check

Status = Literal["pass", "warn", "fail"]

# What a process can allocate on a GPU is less than NVML's total (the profile's
# ``min_memory_mib``): the driver reserves some for itself (NVML's "reserved" memory, about
# 0.5 GiB on Hopper), the process's own CUDA context takes 0.3 to 0.6 GiB (with lazy module
# loading, the default since CUDA 11.7), and cuBLAS/cuDNN handles a little more. The usable
# memory figure may fall this far below the minimum; memory held by anything else (a stray
# process, a MIG slice, a card with less memory) shows up beyond it. An estimate, until
# measured on each GPU model.
USABLE_MEMORY_ALLOWANCE_MIB = 1536
DEFAULT_SLOWDOWN_MARGIN_C = 5


class ProfileError(ValueError):
    """A profile that cannot be found, read or validated; the message is one line."""


@dataclass(frozen=True)
class Verdict:
    """The judgement of one measured figure against its reference."""

    status: Status
    measured: float
    reference: float
    low: float
    high: float  # inf: no upper limit
    unit: str
    lower_pct: float
    upper_pct: float | None  # None: no upper limit
    warn_pct: float | None

    @property
    def tolerance(self) -> str:
        """``-15%/+10%``, and the warning band when there is one: ``-15%/+10% (warn beyond 5%)``;
        ``-1.1%/no upper limit`` for a figure that may be as high as it likes."""
        above = "no upper limit" if self.upper_pct is None else f"+{_num(self.upper_pct)}%"
        text = f"-{_num(self.lower_pct)}%/{above}"
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

    def properties(self, name: str) -> list[properties.Property]:
        """JUnit properties: the figure and its reference, tolerance and verdict."""
        return [
            (properties.figure(name), _q(self.measured, self.unit)),
            (properties.figure(name, properties.REFERENCE), _q(self.reference, self.unit)),
            (properties.figure(name, properties.TOLERANCE), self.tolerance),
            (properties.figure(name, properties.VERDICT), self.status),
        ]


@dataclass(frozen=True)
class Reference:
    """An expected figure with its allowed deviation below and above, in percent.

    ``judge(measured)``: ``fail`` outside ``[value * (1 - lower_pct/100), value * (1 +
    upper_pct/100)]`` (bounds included in the pass; no upper bound when ``upper_pct`` is None),
    ``warn`` inside it but beyond ``warn_pct`` from the value, else ``pass``.
    """

    value: float
    unit: str
    lower_pct: float
    upper_pct: float | None
    warn_pct: float | None = None
    required: bool = True

    @property
    def low(self) -> float:
        return self.value * (100 - self.lower_pct) / 100

    @property
    def high(self) -> float:
        return math.inf if self.upper_pct is None else self.value * (100 + self.upper_pct) / 100

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


@dataclass(frozen=True)
class Health:
    """Health limits beyond what NVML states about the GPU itself."""

    max_temperature_c: int | None = None
    slowdown_margin_c: int = DEFAULT_SLOWDOWN_MARGIN_C


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    source: str  # where it was read from, for messages: a path, or "shipped NAME.toml"
    inventory: Inventory
    performance: Mapping[str, Reference]
    required_checks: frozenset[Check]
    health: Health = Health()

    def requires(self, check: str) -> bool:
        """Whether ``--acceptance`` turns a skip of ``check`` into a failure."""
        return check in self.required_checks

    def reference(self, figure: str) -> Reference | None:
        """What the figure is judged against: its ``[performance]`` table, or for
        ``usable_memory`` the inventory's memory less ``USABLE_MEMORY_ALLOWANCE_MIB`` (no
        upper limit); None when the profile has no reference for it."""
        if figure == USABLE_MEMORY:
            minimum = self.inventory.min_memory_mib
            if minimum is None:
                return None
            return Reference(
                float(minimum), "MiB", USABLE_MEMORY_ALLOWANCE_MIB / minimum * 100, None
            )
        return self.performance.get(figure)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"550.54.15"`` -> ``(550, 54, 15)``; trailing zeros do not matter in comparisons."""
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ValueError(f"not a dotted version: {version!r}")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _q(value: float, unit: str) -> str:
    return f"{_num(value)} {unit}" if unit else _num(value)
