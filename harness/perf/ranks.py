"""Running a measurement on the rank pool from a controller-side test, and getting its
figures back: the pool returns each rank's value, which ``@pytest.mark.distributed`` tests
discard. The test stays in the controller, where ``check_metric`` and ``record_metric`` can
turn the figures into JUnit properties.
"""

from collections.abc import Callable
from typing import Any

import pytest

from harness.plugin.rank_tests import conclude, pools_key
from harness.rankpool.pool import PoolStartError


def run_on_ranks(
    config: pytest.Config,
    function: Callable[..., Any],
    world_size: int,
    *,
    backend: str,
    **kwargs: Any,
) -> list[Any]:
    """``function(dist_env=..., **kwargs)`` on every rank of this process's rank pool of
    ``world_size`` ranks over ``--devices``; the ranks' return values, in rank order.

    Skips when the pool's layout would not use ``backend`` (ranks sharing a GPU use gloo,
    for one); fails with the pool's message naming the ranks when any rank fails.
    """
    try:
        pool = config.stash[pools_key].get(world_size)
    except PoolStartError as err:
        problem = str(err)
    else:
        problem = None
    if problem is not None:  # outside the except: the failure is the message, not a chain
        pytest.fail(problem, pytrace=False)
    if pool.backend != backend:
        where = ", ".join(pool.layout.devices)
        pytest.skip(
            f"needs {backend} with one rank per GPU; {world_size} ranks on {where} use "
            f"{pool.backend}"
        )
    results = pool.run(
        function.__module__,
        function.__qualname__,
        kwargs,
        timeout=config.getoption("dist_timeout"),
    )
    conclude(results)
    return [result.value for result in results]
