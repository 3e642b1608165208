"""``--profile`` and ``--acceptance``: the node profile checks are judged against, and the rule
that a required check which could not run fails.

``--profile`` is a shipped name, a path, or ``auto``: the shipped profile of the node's GPU
model and count (``harness.profiles.choose``), read from ``--fake-node`` or NVML. The choice
and how it was made are in the report header and the JUnit suite properties.

A test implementing a check is marked ``@pytest.mark.required_check(Check.HEALTH_ECC)``; the
name must be in ``harness.checks.Check``, or the run stops at collection naming the test and the
closest known check. Under ``--acceptance``, when such a test is skipped (by a marker, a fixture
or its body) and the profile requires that check, the test fails instead, with the skip's
reason: the skip is caught where it is raised (``pytest_runtest_setup``, ``pytest_runtest_call``)
and the call phase fails with it. Without ``--acceptance`` a skip stays a skip.

A required check that no selected test implements (a suite left out, ``-k``) cannot pass
silently either: the run warns, and under ``--acceptance`` one extra test,
``acceptance::required_checks``, fails naming the missing checks. Nor can a GPU the run leaves
out (``--devices`` or ``CUDA_VISIBLE_DEVICES`` giving it fewer GPUs than the profile expects):
under ``--acceptance`` ``acceptance::every_gpu`` fails naming the GPUs tested.
"""

import warnings
from dataclasses import dataclass

import pytest
import torch

from harness import properties
from harness.checks import is_check, unknown_check
from harness.hardware.pci import nvidia_gpus_on_pci
from harness.profiles import (
    NodeModels,
    Profile,
    ProfileError,
    choose_profile,
    load_profile,
    load_shipped_profiles,
)
from harness.profiles.resources import PROFILE_SUFFIX, is_path

AUTO = "auto"
MARKER = "required_check"
MARKER_HELP = (
    f"{MARKER}(check): the test implements the named check (a harness.checks.Check, e.g. "
    "Check.HEALTH_ECC); under --acceptance its skip is a failure when the --profile requires it"
)


@dataclass(frozen=True)
class Chosen:
    profile: Profile
    chosen_by: str  # "name", "path" or "auto"
    why: str = ""  # for auto: the node it matched


chosen_key = pytest.StashKey[Chosen | None]()
acceptance_key = pytest.StashKey[bool]()
setup_skip_key = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness", "GPU-cluster test harness")
    group.addoption(
        "--profile",
        default=None,
        metavar="NAME|PATH|auto",
        help="node profile to judge inventory and performance against: a shipped name "
        "(h200-1x), a path to a TOML file, or auto: the shipped profile matching the node's "
        "GPU model and count (from NVML or --fake-node).",
    )
    group.addoption(
        "--acceptance",
        action="store_true",
        default=False,
        help="acceptance mode (needs --profile): a skipped test marked required_check(NAME) "
        "fails when the profile requires NAME.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    spec = config.getoption("profile")
    acceptance = bool(config.getoption("acceptance"))
    if acceptance and spec is None:
        raise pytest.UsageError("--acceptance needs --profile NAME|PATH|auto")
    chosen = None
    if spec is not None:
        try:
            chosen = _choose(config, spec)
        except ProfileError as err:
            raise pytest.UsageError(str(err)) from None
    config.stash[chosen_key] = chosen
    config.stash[acceptance_key] = acceptance


def _choose(config: pytest.Config, spec: str) -> Chosen:
    if spec != AUTO:
        return Chosen(load_profile(spec), "path" if is_path(spec, PROFILE_SUFFIX) else "name")
    node = node_models(config)
    profile = choose_profile(node, load_shipped_profiles())
    return Chosen(profile, "auto", f"{node.summary} ({node.source})")


def node_models(config: pytest.Config) -> NodeModels:
    """What ``--profile auto`` matches: the GPU names NVML (or ``--fake-node``) lists.

    Without NVML a node with CUDA devices cannot be told apart, which is an error rather than a
    CPU-only profile (the acceptance of a GPU node must not pass for want of GPUs)."""
    from harness.plugin.node import NoNvml, fake_node, node_gpus, node_nvml

    nvml = node_nvml(config)
    if isinstance(nvml, NoNvml):
        visible = torch.cuda.device_count()  # counts without initialising CUDA
        on_pci = nvidia_gpus_on_pci() or 0  # a GPU whose driver is gone still sits on the bus
        if visible or on_pci:
            raise ProfileError(
                f"--profile auto: NVML unavailable ({nvml.reason}), yet torch sees {visible} "
                f"CUDA device(s) and the PCI bus {on_pci} NVIDIA GPU(s): the node's GPUs "
                "cannot be told; pass --profile NAME"
            )
        return NodeModels((), f"NVML unavailable: {nvml.reason}; no NVIDIA GPU seen")
    names = tuple(gpu.name for gpu in node_gpus(config).in_nvml_order)
    if fake_node(config) is not None:
        return NodeModels(names, f"fake-node {config.getoption('fake_node')}")
    return NodeModels(names, "NVML", nvidia_gpus_on_pci())


def chosen_profile(config: pytest.Config) -> Profile | None:
    """The profile ``--profile`` chose, validated at configure time; None without one."""
    chosen = config.stash.get(chosen_key, None)
    return None if chosen is None else chosen.profile


def acceptance_mode(config: pytest.Config) -> bool:
    return config.stash.get(acceptance_key, False)


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    """The ``--profile`` in force; the test is skipped when none was given."""
    chosen = chosen_profile(pytestconfig)
    if chosen is None:
        pytest.skip("no node profile: pass --profile NAME|PATH|auto")
    return chosen


@pytest.fixture(scope="session")
def node_profile(pytestconfig: pytest.Config) -> Profile | None:
    """The ``--profile`` in force, or None: for checks that judge without one too."""
    return chosen_profile(pytestconfig)


@pytest.fixture(scope="session")
def acceptance(pytestconfig: pytest.Config) -> bool:
    """Whether ``--acceptance`` is on."""
    return acceptance_mode(pytestconfig)


def header_line(config: pytest.Config) -> str | None:
    """``profile: h100-sxm-8x (auto: 8x NVIDIA H100 80GB HBM3 (NVML)), acceptance``."""
    chosen = config.stash.get(chosen_key, None)
    if chosen is None:
        return None
    how = f"auto: {chosen.why}" if chosen.chosen_by == AUTO else chosen.profile.source
    mode = ", acceptance" if acceptance_mode(config) else ""
    return f"profile: {chosen.profile.name} ({how}){mode}"


def pytest_harness_suite_properties(config: pytest.Config) -> list[properties.Property]:
    chosen = config.stash.get(chosen_key, None)
    if chosen is None:
        return []
    return [
        (properties.PROFILE, chosen.profile.name),
        (properties.PROFILE_CHOSEN_BY, chosen.chosen_by),
        (properties.ACCEPTANCE, str(acceptance_mode(config)).lower()),
    ]


# ---- required checks ------------------------------------------------------------------------


def implemented_checks(item: pytest.Item) -> list[str]:
    return [str(marker.args[0]) for marker in item.iter_markers(MARKER) if marker.args]


def required_here(item: pytest.Item) -> list[str]:
    """The checks the item implements that the profile requires, under ``--acceptance``."""
    profile = chosen_profile(item.config)
    if profile is None or not acceptance_mode(item.config):
        return []
    return [check for check in implemented_checks(item) if profile.requires(check)]


def _failure(item: pytest.Item, checks: list[str], reason: str) -> str:
    profile = chosen_profile(item.config)
    assert profile is not None
    return (
        f"required check {', '.join(checks)} did not run under --acceptance "
        f"(profile {profile.name}): {reason}"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    checks = required_here(item)
    if not checks:
        return (yield)
    try:
        return (yield)
    except pytest.skip.Exception as skip:
        # The call phase fails with it: a failure of the test, not an error of its setup.
        item.stash[setup_skip_key] = skip.msg
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    reason = item.stash.get(setup_skip_key, None)
    if reason is not None:  # instead of the test, whose setup did not finish
        raise pytest.fail.Exception(_failure(item, required_here(item), reason), pytrace=False)


# A second implementation of pytest_runtest_call (pytest registers only names starting
# "pytest_"; specname says which hook): the wrapper around the test's call.
@pytest.hookimpl(wrapper=True, specname="pytest_runtest_call")
def pytest_runtest_call_fails_skips(item: pytest.Item):
    checks = required_here(item)
    if not checks:
        return (yield)
    try:
        return (yield)
    except pytest.skip.Exception as skip:
        raise pytest.fail.Exception(_failure(item, checks, skip.msg), pytrace=False) from None


class AcceptanceGap(pytest.Item):
    """Fails with its text: what an acceptance run would otherwise leave unjudged (required
    checks no selected test implements, GPUs of the node no test runs on)."""

    def __init__(self, *, text: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.text = text

    def runtest(self) -> None:
        raise AcceptanceGapError(self.text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, AcceptanceGapError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[str, None, str]:
        return "acceptance", None, self.name.replace("_", " ")


class AcceptanceGapError(Exception):
    pass


class MissingChecksWarning(UserWarning):
    """The profile requires checks that no selected test implements."""


def missing_text(missing: list[str], profile_name: str) -> str:
    return (
        f"profile {profile_name} requires {len(missing)} check(s) no selected test implements: "
        f"{', '.join(missing)}"
    )


def missing_checks(items: list[pytest.Item], profile: Profile) -> list[str]:
    """The profile's required checks that none of ``items`` is marked as implementing."""
    implemented = {check for item in items for check in implemented_checks(item)}
    return sorted(str(check) for check in profile.required_checks - implemented)


def check_markers(items: list[pytest.Item]) -> None:
    """Every ``required_check`` marker names one known check, on a test not expected to fail
    (an xfail would hide the failure a skipped required check becomes); a usage error
    otherwise."""
    for item in items:
        if item.get_closest_marker(MARKER) and item.get_closest_marker("xfail"):
            raise pytest.UsageError(
                f"{item.nodeid}: a required check cannot be marked xfail (its skip would be "
                "reported as an expected failure under --acceptance)"
            )
        for marker in item.iter_markers(MARKER):
            if len(marker.args) != 1 or marker.kwargs:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{MARKER} takes one check name, "
                    f"got {marker.args!r} {marker.kwargs!r}"
                )
            if not is_check(marker.args[0]):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{MARKER}: {unknown_check(marker.args[0])}"
                )


def untested_gpus(config: pytest.Config, profile: Profile) -> str | None:
    """Why the run cannot accept the node: ``--devices`` (or ``CUDA_VISIBLE_DEVICES``) leaves
    out GPUs the profile expects, whose per-GPU checks would then never run; None if not."""
    from harness.plugin.node_report import devices_under_test
    from harness.plugin.options import chosen_devices

    devices = chosen_devices(config)
    expected = profile.inventory.gpu_count
    if devices.kind != "cuda" or not expected:
        return None  # on CPU devices the GPU checks skip, and their skips fail as required
    tested = devices_under_test(config)
    if len(tested) >= expected:
        return None
    names = ", ".join(gpu.short_label for gpu in tested)
    return (
        f"profile {profile.name} expects {expected} GPUs; --devices {devices.label} tests "
        f"{len(tested)} ({names}): the per-GPU checks of the others would not run (give every "
        "GPU to the run: --devices cuda, CUDA_VISIBLE_DEVICES unset)"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # trylast: after -k/-m deselection, so the check sees what will actually run.
    check_markers(items)
    profile = chosen_profile(config)
    if profile is None:
        return
    gaps = {}
    missing = missing_checks(items, profile)
    if missing:
        gaps["required_checks"] = missing_text(missing, profile.name)
    if acceptance_mode(config) and items and (untested := untested_gpus(config, profile)):
        gaps["every_gpu"] = untested
    if not acceptance_mode(config):
        if missing:  # each xdist worker collects and warns; the summary shows it once
            warnings.warn(MissingChecksWarning(gaps["required_checks"]), stacklevel=1)
        return
    for name, text in gaps.items():
        items.append(
            AcceptanceGap.from_parent(session, name=name, nodeid=f"acceptance::{name}", text=text)
        )
