"""The ``figures`` fixture: the one way a test records a measured figure, judged against the
``--profile`` where it has a reference for it.

``figures.record(name, value, unit, gpu=..., reference=...)`` writes ``metric.<name>`` (and,
when judged, its reference, tolerance and verdict) as JUnit properties of the running test,
fails the test outside the tolerance and warns (``ReferenceWarning``) outside the warning band.
``value`` may be a ``harness.perf.measurement.Measurement``, whose unit and how it was measured
are recorded too. A figure belongs to the GPUs ``gpu`` names (a ``Gpu`` or a pair) or, by
default, to the GPUs the test runs on (``on_gpus``, called by the suites' GPU fixtures); their
UUIDs are the figure's ``.gpu``, and failure messages start with their labels.

``figures.conclude(findings)`` does the same for a hardware check's findings, then fails on any
problem, else skips naming any reading NVML could not give.
"""

import warnings
from collections.abc import Sequence

import pytest

from harness import properties
from harness.checks import DERIVED_FIGURES, FIGURES
from harness.gpus import Gpu
from harness.hardware import Findings
from harness.perf.measurement import Measurement
from harness.plugin.profile import chosen_profile
from harness.profiles import Profile, Verdict

test_gpus_key = pytest.StashKey[tuple[Gpu, ...]]()

UNITS = FIGURES | DERIVED_FIGURES


class ReferenceWarning(UserWarning):
    """A figure inside its tolerance but outside its warning band."""


def on_gpus(item: pytest.Item, *gpus: Gpu) -> None:
    """The GPUs ``item`` runs on: one, or a pair's source and destination. Their labels become
    its ``gpu`` (``gpu.source``, ``gpu.destination``) properties, and they own its figures."""
    item.stash[test_gpus_key] = gpus
    names = (
        (properties.GPU,) if len(gpus) == 1 else (properties.GPU_SOURCE, properties.GPU_DESTINATION)
    )
    item.user_properties += [(name, gpu.label) for name, gpu in zip(names, gpus, strict=True)]


class Figures:
    """Records the running test's figures; see the module's docstring."""

    def __init__(self, item: pytest.Item, profile: Profile | None) -> None:
        self.item = item
        self.profile = profile

    def record(
        self,
        name: str,
        value: float | Measurement,
        unit: str = "",
        *,
        gpu: Gpu | Sequence[Gpu] | None = None,
        reference: float | None = None,
    ) -> Verdict | None:
        """Record ``name``; judged (and the verdict returned) when the profile has a reference
        for it, else recorded as it is, with ``reference`` as a value it is compared with."""
        details: list[properties.Property] = []
        if isinstance(value, Measurement):
            if unit and unit != value.unit:
                raise ValueError(f"{name}: the measurement is in {value.unit}, not {unit}")
            unit, details = value.unit, value.properties(name)
            value = value.value
        if name in UNITS and unit != UNITS[name]:
            raise ValueError(f"{name} is in {UNITS[name]}, not {unit or 'no unit'}")
        gpus = self._gpus(gpu)
        owner = [(properties.figure(name, properties.FIGURE_GPU), ",".join(g.uuid for g in gpus))]
        judged = self.profile.reference(name) if self.profile is not None else None
        if judged is None:
            recorded = [(properties.figure(name), quantity(value, unit))]
            if reference is not None:
                recorded.append(
                    (properties.figure(name, properties.REFERENCE), quantity(reference, unit))
                )
            self.item.user_properties += [*recorded, *(owner if gpus else ()), *details]
            return None
        verdict = judged.judge(value)
        self.item.user_properties += [*verdict.properties(name), *(owner if gpus else ()), *details]
        where = "".join(f"{g.label}: " for g in gpus[:1]) if len(gpus) == 1 else ""
        if len(gpus) == 2:
            where = f"{gpus[0].label} -> {gpus[1].label}: "
        if verdict.status == "fail":
            pytest.fail(f"{where}{name}: {verdict.text}", pytrace=False)
        if verdict.status == "warn":
            warnings.warn(f"{where}{name}: {verdict.text}", ReferenceWarning, stacklevel=2)
        return verdict

    def conclude(self, findings: Findings) -> None:
        """Record the findings' figures and facts, then end the test: fail on any problem, else
        skip on any unavailable reading, else return (a pass)."""
        for name, value, unit, gpu in findings.metrics:
            self.record(name, value, unit, gpu=gpu if gpu is not None else ())
        self.item.user_properties += findings.properties
        if findings.problems:
            pytest.fail("\n".join(findings.problems), pytrace=False)
        if findings.unavailable:
            pytest.skip("; ".join(findings.unavailable))

    def _gpus(self, gpu: Gpu | Sequence[Gpu] | None) -> tuple[Gpu, ...]:
        if gpu is None:
            return self.item.stash.get(test_gpus_key, ())
        return (gpu,) if isinstance(gpu, Gpu) else tuple(gpu)


def quantity(value: float, unit: str) -> str:
    """``12.3 ms``: integers as they are, other numbers to six significant digits."""
    number = str(value) if isinstance(value, int) else f"{value:.6g}"
    return f"{number} {unit}" if unit else number


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Record and judge the test's figures: ``figures.record(name, value, unit, gpu=None,
    reference=None)`` and ``figures.conclude(findings)``."""
    return Figures(request.node, chosen_profile(request.config))
