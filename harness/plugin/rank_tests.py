"""Distributed tests: ``@pytest.mark.distributed(world_size=N)``, ``dist_env``, ``--dist-timeout``.

A marked test runs on every rank of a world (SPMD):

- under plain ``pytest``, on this process's rank pool (``harness.rankpool.pool``), started at the
  first distributed test and reused (one pool per pytest process, so one per xdist worker;
  replaced when a test wants another world size). The rank imports the test module itself
  and calls the test function. Fixtures, autouse ones included, run here in the controller;
  the test function's own arguments other than ``dist_env`` (its parameters, plain-data
  fixture values) are sent to the ranks and must be plain data. The ranks' results become
  one outcome (``harness.rankpool.verdict``). A failed, hung or dead rank fails the test and
  the pool is rebuilt for the next one.
- under torchrun (``RANK`` and ``WORLD_SIZE`` set), in this process, which is one rank; the
  marker's ``world_size`` is then a minimum, and each rank writes its own JUnit file.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from harness import properties
from harness.plugin.junit import xdist_worker
from harness.plugin.options import chosen_devices
from harness.rankpool import torchrun
from harness.rankpool.env import DistEnv
from harness.rankpool.pool import PoolStartError, RankPool
from harness.rankpool.protocol import (
    PASSED,
    SKIPPED,
    XFAILED,
    NotPlainData,
    RankResult,
    ensure_plain,
)
from harness.rankpool.timeouts import DEFAULT_TIMEOUT, GUARD_MARGIN, last_resort_guard
from harness.rankpool.verdict import judge

MARKER = "distributed"
MARKER_HELP = (
    "distributed(world_size=N, timeout=None): run the test on every rank of an N-rank "
    "process group (the rank pool, or each torchrun rank); it may take the dist_env fixture; "
    "timeout in seconds overrides --dist-timeout"
)


# What the ranks import to run tests: pytest's assertion rewriting and its skip and xfail.
RANK_ADAPTER = "harness.plugin.on_rank"


@dataclass(frozen=True)
class DistSpec:
    world_size: int
    timeout: float


class _Pools:
    """This process's rank pool: one at a time, replaced when a test wants another world size."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.pool: RankPool | None = None

    def get(self, world_size: int) -> RankPool:
        if self.pool is not None and self.pool.world_size != world_size:
            self.close()
        if self.pool is None:
            self.pool = RankPool(
                world_size,
                devices=chosen_devices(self.config),
                ddp_impl=ddp_impl_spec(self.config),
                timeout=self.config.getoption("dist_timeout"),
                adapter=RANK_ADAPTER,
            )
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()


pools_key = pytest.StashKey[_Pools]()
world_key = pytest.StashKey[torchrun.TorchrunWorld]()
stderr_key = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("distributed", "distributed tests (rank pool, torchrun)")
    group.addoption(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="per-test timeout of distributed tests: a rank not done by then fails the test "
        "with its stack, and the process group's timeout follows it. "
        f"Default: {DEFAULT_TIMEOUT:g}.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: the JUnit path must be per rank before junitxml's pytest_configure reads it.
    config.addinivalue_line("markers", MARKER_HELP)
    if config.getoption("dist_timeout") <= 0:
        raise pytest.UsageError(
            f"--dist-timeout {config.getoption('dist_timeout'):g}: must be a positive number "
            "of seconds"
        )
    config.stash[pools_key] = _Pools(config)
    if not torchrun.active():
        return
    try:
        world = torchrun.world_from_env()
    except torchrun.TorchrunEnvError as err:
        raise pytest.UsageError(f"torchrun environment: {err}") from None
    config.stash[world_key] = world
    if config.option.xmlpath and not xdist_worker(config):
        config.option.xmlpath = torchrun.rank_junit_path(
            config.option.xmlpath, torchrun.host_name(), world.rank
        )
    # faulthandler's last-resort dumps go to the real stderr, not to pytest's capture.
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            config.stash[stderr_key] = os.dup(2)
    else:
        config.stash[stderr_key] = os.dup(2)


def pytest_harness_suite_properties(config: pytest.Config) -> list[properties.Property]:
    world = config.stash.get(world_key, None)
    if world is None:
        return []
    return [
        (properties.RANK, str(world.rank)),
        (properties.WORLD_SIZE, str(world.world_size)),
        (properties.LOCAL_RANK, str(world.local_rank)),
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        try:
            spec = dist_spec(item)
        except ValueError:
            continue  # reported when the test runs
        item.user_properties.append((properties.WORLD_SIZE, str(spec.world_size)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is None:
        return
    try:
        spec = dist_spec(item)
    except ValueError as err:
        pytest.fail(str(err), pytrace=False)
    world = item.config.stash.get(world_key, None)
    if world is not None and world.world_size < spec.world_size:
        pytest.skip(
            f"needs a world of at least {spec.world_size} ranks; this torchrun world has "
            f"{world.world_size}"
        )


class OnTheRanks:
    """``dist_env`` in the controller under the pool: the test body runs on the ranks, where
    the real one is built. Fixtures run here, so a fixture cannot use it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"dist_env.{name}: dist_env exists on the ranks only. Under the rank pool the "
            "test body runs on every rank but fixtures run in the controller: use dist_env "
            "in the test body, or in helpers it calls, not in a fixture"
        )

    def __repr__(self) -> str:
        return "<dist_env: on the ranks>"


@pytest.fixture
def dist_env(request: pytest.FixtureRequest) -> DistEnv | OnTheRanks:
    """This rank's ``DistEnv`` (rank, world_size, device, backend, ``ddp``, ddp_impl).

    Only for tests marked ``@pytest.mark.distributed``. Under the pool the test body runs on
    the ranks, where ``dist_env`` is built; in the controller it is an ``OnTheRanks``.
    """
    if request.node.get_closest_marker(MARKER) is None:
        pytest.fail(
            f"{request.node.nodeid}: dist_env needs @pytest.mark.{MARKER}(world_size=N)",
            pytrace=False,
        )
    world = request.config.stash.get(world_key, None)
    if world is None:
        return OnTheRanks()
    return _torchrun_env(request.config, world)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if pyfuncitem.get_closest_marker(MARKER) is None:
        return None
    spec = dist_spec(pyfuncitem)
    kwargs = _test_arguments(pyfuncitem)
    world = pyfuncitem.config.stash.get(world_key, None)
    if world is not None:
        _run_in_process(pyfuncitem, spec, world, kwargs)
        return True
    problem = None
    try:
        for name, value in kwargs.items():
            ensure_plain(f"argument {name!r} of {pyfuncitem.name}", value)
        pool = pyfuncitem.config.stash[pools_key].get(spec.world_size)
        results = pool.run(
            pyfuncitem.module.__name__,
            _qualname(pyfuncitem),
            kwargs,
            timeout=spec.timeout,
            path=str(pyfuncitem.path),
        )
    except (NotPlainData, PoolStartError) as err:
        problem = str(err)
    if problem is not None:  # outside the except: the failure is the message, not a chain
        pytest.fail(problem, pytrace=False)
    for result in results:
        if result.output:
            pyfuncitem.add_report_section("call", f"stdout rank {result.rank}", result.output)
    conclude(results)
    return True


def conclude(results: list[RankResult]) -> None:
    """Make the ranks' results the test's outcome: return when every rank passed, else skip,
    xfail or fail with the message naming the ranks (``harness.rankpool.verdict``)."""
    verdict = judge(results)
    if verdict.outcome == SKIPPED:
        raise pytest.skip.Exception(verdict.message, _use_item_location=True)
    if verdict.outcome == XFAILED:
        pytest.xfail(verdict.message)
    if verdict.outcome != PASSED:
        pytest.fail(verdict.message, pytrace=False)


@pytest.fixture
def on_ranks(pytestconfig: pytest.Config) -> Callable[..., list[Any]]:
    """``on_ranks(function, world_size, *, backend, **kwargs)``: ``function(dist_env=...,
    **kwargs)`` on every rank of this process's rank pool of ``world_size`` ranks over
    ``--devices``; the ranks' return values, in rank order.

    For measurements whose figures the controller records: the test stays here and the pool
    hands back each rank's value, which ``@pytest.mark.distributed`` tests discard. Skips
    when the pool's layout would not use ``backend`` (ranks sharing a GPU use gloo, for one);
    fails with the pool's message naming the ranks when any rank fails.
    """

    def run(function: Callable[..., Any], world_size: int, *, backend: str, **kwargs: Any):
        pool = pytestconfig.stash[pools_key].get(world_size)  # nothing starts before run()
        if pool.backend != backend:
            where = ", ".join(pool.layout.devices)
            pytest.skip(
                f"needs {backend} with one rank per GPU; {world_size} ranks on {where} use "
                f"{pool.backend}"
            )
        problem = None
        try:
            results = pool.run(
                function.__module__,
                function.__qualname__,
                kwargs,
                timeout=pytestconfig.getoption("dist_timeout"),
            )
        except (PoolStartError, NotPlainData) as err:
            problem = str(err)
        if problem is not None:  # outside the except: the failure is the message, not a chain
            pytest.fail(problem, pytrace=False)
        conclude(results)
        return [result.value for result in results]

    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    pools = config.stash.get(pools_key, None)
    if pools is not None:
        pools.close()
    if config.stash.get(world_key, None) is not None:
        torchrun.shutdown()


def pytest_unconfigure(config: pytest.Config) -> None:
    pools = config.stash.get(pools_key, None)
    if pools is not None:  # sessionfinish did not run (an early exit)
        pools.close()
    fd = config.stash.get(stderr_key, None)
    if fd is not None:
        os.close(fd)
        del config.stash[stderr_key]


def dist_spec(item: pytest.Item) -> DistSpec:
    """The marker's world size and the test's timeout; ValueError naming the test if bad."""
    marker = item.get_closest_marker(MARKER)
    assert marker is not None
    usage = f"{item.nodeid}: @pytest.mark.{MARKER}(world_size=N, timeout=None)"
    kwargs = dict(marker.kwargs)
    if len(marker.args) > 1:
        raise ValueError(f"{usage} takes world_size as its only positional argument")
    world_size = marker.args[0] if marker.args else kwargs.pop("world_size", None)
    timeout = kwargs.pop("timeout", None)
    if kwargs:
        raise ValueError(f"{usage}: unknown argument(s) {', '.join(sorted(kwargs))}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"{usage}: world_size must be an integer >= 1, got {world_size!r}")
    if timeout is None:
        timeout = item.config.getoption("dist_timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"{usage}: timeout must be a positive number of seconds, got {timeout!r}")
    return DistSpec(world_size, float(timeout))


def ddp_impl_spec(config: pytest.Config) -> str:
    """The ``--ddp-impl`` spec string, ``reference`` where the option does not exist."""
    return str(config.getoption("ddp_impl", "reference") or "reference")


def _test_arguments(item: pytest.Function) -> dict[str, Any]:
    """The test function's own arguments (as pytest passes them), less ``dist_env``."""
    names = item._fixtureinfo.argnames
    return {name: item.funcargs[name] for name in names if name != "dist_env"}


def _qualname(item: pytest.Function) -> str:
    """The test's dotted path inside its module, by the names pytest collected it under."""
    parts = [node.name for node in item.listchain() if isinstance(node, pytest.Class)]
    return ".".join([*parts, item.originalname])


def _torchrun_env(config: pytest.Config, world: torchrun.TorchrunWorld) -> DistEnv:
    return torchrun.ensure_process_group(
        world,
        chosen_devices(config),
        ddp_impl_spec(config),
        config.getoption("dist_timeout"),
    )


def _run_in_process(
    item: pytest.Function, spec: DistSpec, world: torchrun.TorchrunWorld, kwargs: dict[str, Any]
) -> None:
    from harness.rankpool.timeouts import set_collective_timeout

    env = _torchrun_env(item.config, world)
    if "dist_env" in item._fixtureinfo.argnames:
        kwargs["dist_env"] = env
    set_collective_timeout(spec.timeout)
    with last_resort_guard(spec.timeout + GUARD_MARGIN, item.config.stash[stderr_key]):
        item.obj(**kwargs)
