"""Optional features of a DDP implementation, and torch's deprecations of its arguments."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def missing_feature(wrapper: nn.Module, feature: str, impl: str) -> str | None:
    """Why a test of ``feature`` (``no_sync``, ``join``) cannot run on ``wrapper``, or None.

    Optional features are detected with ``hasattr``; a test of a missing one skips with this
    reason.
    """
    if hasattr(wrapper, feature):
        return None
    return f"--ddp-impl {impl} has no {feature}(), an optional feature"


@contextmanager
def quiet_broadcast_buffers_deprecation() -> Iterator[None]:
    """Silence torch 2.13's FutureWarning for ``broadcast_buffers``.

    The suites still pass ``broadcast_buffers=False``: every implementation accepts it,
    and its meaning (no buffer synchronisation at all) is what the claim is about.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        yield
