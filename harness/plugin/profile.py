"""``--profile`` and ``--acceptance``: the node profile checks are judged against, and the rule
that a required check which could not run fails.

A test implementing a check is marked ``@pytest.mark.required_check("health.ecc")``. Under
``--acceptance``, when such a test is skipped (in setup or in its body) and the profile
requires that check (``harness.profiles.Profile.requires``), its report becomes a failure
carrying the skip reason. Without ``--acceptance`` a skip stays a skip.

A required check that no selected test implements (a suite left out, ``-k``, a typo in the
profile) cannot pass silently either: the run warns, and under ``--acceptance`` one extra test,
``acceptance::required_checks``, fails naming the missing checks.
"""

import warnings
from collections.abc import Callable

import pytest
from _pytest.junitxml import xml_key

from harness.profiles import Profile, ProfileError, Verdict, load_profile

profile_key = pytest.StashKey[Profile | None]()
acceptance_key = pytest.StashKey[bool]()

MARKER_HELP = (
    "required_check(name): the test implements the named check (e.g. 'health.ecc'); under "
    "--acceptance its skip is a failure when the --profile requires that check"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness", "GPU-cluster test harness")
    group.addoption(
        "--profile",
        default=None,
        metavar="NAME|PATH",
        help="node profile to judge inventory and performance against: a shipped name "
        "(profiles/NAME.toml) or a path to a TOML file.",
    )
    group.addoption(
        "--acceptance",
        action="store_true",
        default=False,
        help="acceptance mode (needs --profile): a skipped test marked required_check(NAME) "
        "fails when the profile requires NAME.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    spec = config.getoption("profile")
    acceptance = bool(config.getoption("acceptance"))
    if acceptance and spec is None:
        raise pytest.UsageError("--acceptance needs --profile NAME|PATH")
    profile = None
    if spec is not None:
        try:
            profile = load_profile(spec)
        except ProfileError as err:
            raise pytest.UsageError(str(err)) from None
    config.stash[profile_key] = profile
    config.stash[acceptance_key] = acceptance


def chosen_profile(config: pytest.Config) -> Profile | None:
    """The profile ``--profile`` chose, validated at configure time; None without one."""
    return config.stash.get(profile_key, None)


def acceptance_mode(config: pytest.Config) -> bool:
    return config.stash.get(acceptance_key, False)


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    """The ``--profile`` in force; the test is skipped when none was given."""
    chosen = chosen_profile(pytestconfig)
    if chosen is None:
        pytest.skip("no node profile: pass --profile NAME|PATH")
    return chosen


@pytest.fixture(scope="session")
def acceptance(pytestconfig: pytest.Config) -> bool:
    """Whether ``--acceptance`` is on."""
    return acceptance_mode(pytestconfig)


class ReferenceWarning(UserWarning):
    """A figure inside its tolerance but outside its warning band."""


@pytest.fixture
def check_metric(
    profile: Profile, request: pytest.FixtureRequest
) -> Callable[[str, float], Verdict]:
    """Judge a measured figure against the profile's reference for it.

    ``check_metric(metric, measured)`` records ``metric.<metric>`` with its reference,
    tolerance and verdict as JUnit properties of the test, fails the test outside the
    tolerance, warns (``ReferenceWarning``) outside the warning band, and returns the
    ``Verdict``. A metric the profile has no reference for skips the test, naming it.
    """

    def check(metric: str, measured: float) -> Verdict:
        reference = profile.performance.get(metric)
        if reference is None:
            pytest.skip(f"profile {profile.name} has no reference for {metric}")
        verdict = reference.judge(measured)
        request.node.user_properties += verdict.properties(metric)
        if verdict.status == "fail":
            pytest.fail(f"{metric}: {verdict.text}", pytrace=False)
        if verdict.status == "warn":
            warnings.warn(f"{metric}: {verdict.text}", ReferenceWarning, stacklevel=2)
        return verdict

    return check


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    xml = config.stash.get(xml_key, None)
    chosen = chosen_profile(config)
    if xml is None or hasattr(config, "workerinput") or chosen is None:
        return
    xml.add_global_property("profile", chosen.name)
    xml.add_global_property("acceptance", str(acceptance_mode(config)).lower())


def required_checks(item: pytest.Item, profile: Profile) -> list[str]:
    """The checks the item implements that the profile requires."""
    names = [marker.args[0] for marker in item.iter_markers("required_check") if marker.args]
    return [name for name in names if profile.requires(name)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    if not report.skipped or hasattr(report, "wasxfail") or not acceptance_mode(item.config):
        return report
    profile = chosen_profile(item.config)
    checks = required_checks(item, profile) if profile is not None else []
    if not checks:
        return report
    reason = _skip_reason(report)
    report.outcome = "failed"
    # A failure, not an error, in the terminal summary and in JUnit, even when the skip came
    # from setup (a fixture or a skip marker); the call phase does not run after it either way.
    report.when = "call"
    report.longrepr = (
        f"required check {', '.join(checks)} did not run under --acceptance "
        f"(profile {profile.name}): {reason}"
    )
    return report


class MissingChecks(pytest.Item):
    """Fails naming the required checks no selected test implements."""

    def __init__(self, *, missing: list[str], profile_name: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.missing = missing
        self.profile_name = profile_name

    def runtest(self) -> None:
        raise MissingChecksError(missing_text(self.missing, self.profile_name))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, MissingChecksError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[str, None, str]:
        return "acceptance", None, "required checks"


class MissingChecksError(Exception):
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
    implemented = {
        marker.args[0]
        for item in items
        for marker in item.iter_markers("required_check")
        if marker.args
    }
    return sorted(profile.required_checks - implemented)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # trylast: after -k/-m deselection, so the check sees what will actually run.
    profile = chosen_profile(config)
    if profile is None:
        return
    missing = missing_checks(items, profile)
    if not missing:
        return
    if not acceptance_mode(config):
        # Each xdist worker collects and warns; the summary shows the one message once.
        warnings.warn(MissingChecksWarning(missing_text(missing, profile.name)), stacklevel=1)
        return
    items.append(
        MissingChecks.from_parent(
            session,
            name="required_checks",
            nodeid="acceptance::required_checks",
            missing=missing,
            profile_name=profile.name,
        )
    )


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return str(reason).removeprefix("Skipped: ")
