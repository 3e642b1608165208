"""``--memory-limit`` and ``--memory-test-share``: the options of the memory suites (their
models are ``--model``'s, ``harness.plugin.models``).

Both are validated at configure time; a bad value is one usage error line naming the option
(exit code 4).
"""

import pytest

from harness import properties
from harness.memory.sizes import SizeError, format_size, parse_size

memory_limit_key = pytest.StashKey[int | None]()
memory_test_share_key = pytest.StashKey[float]()

# The pattern test's default share of each GPU's free memory: nearly all of it (a fault
# anywhere should be found), leaving room for the test's chunk-sized temporaries. On HBM a
# pass over 90% of an H200 takes tens of milliseconds per pattern.
DEFAULT_TEST_SHARE = 0.9
MAX_TEST_SHARE = 0.95


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness")
    group.addoption(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        help="emulate a GPU with this much memory in the largest-batch search "
        "(suites/memory), e.g. 24GiB, 512MiB or 80GB: torch's allocator is capped there with "
        "set_per_process_memory_fraction. Default: a quick search that emulates a 4 GiB card "
        "(or the GPU's free memory, if less); for the thorough search of a whole GPU give a "
        "size near its free memory, e.g. 130GiB on an H200.",
    )
    group.addoption(
        "--memory-test-share",
        default=str(DEFAULT_TEST_SHARE),
        metavar="FRACTION",
        help="share of each GPU's free memory the pattern memory test fills, above 0 and at "
        f"most {MAX_TEST_SHARE}. Default: {DEFAULT_TEST_SHARE}.",
    )


def parse_test_share(text: str) -> float:
    """``--memory-test-share``'s value; ``ValueError`` with a one-line message."""
    try:
        share = float(text)
    except ValueError:
        share = float("nan")
    if not 0 < share <= MAX_TEST_SHARE:  # NaN fails too
        raise ValueError(
            f"--memory-test-share {text!r}: must be a fraction above 0 and at most "
            f"{MAX_TEST_SHARE} (the rest is room for the test's own temporaries)"
        )
    return share


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    limit = config.getoption("memory_limit")
    try:
        config.stash[memory_limit_key] = None if limit is None else parse_size(limit)
        config.stash[memory_test_share_key] = parse_test_share(
            str(config.getoption("memory_test_share"))
        )
    except SizeError as err:
        raise pytest.UsageError(f"--memory-limit {err}") from None
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


def pytest_harness_suite_properties(config: pytest.Config) -> list[properties.Property]:
    limit = config.stash.get(memory_limit_key, None)
    return [] if limit is None else [(properties.MEMORY_LIMIT, format_size(limit))]


@pytest.fixture(scope="session")
def memory_limit(pytestconfig: pytest.Config) -> int | None:
    """``--memory-limit`` in bytes, or None when not given."""
    return pytestconfig.stash[memory_limit_key]


@pytest.fixture(scope="session")
def memory_test_share(pytestconfig: pytest.Config) -> float:
    """``--memory-test-share``: the share of free memory the pattern test fills."""
    return pytestconfig.stash[memory_test_share_key]
