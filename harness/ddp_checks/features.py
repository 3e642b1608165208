"""Optional features of a DDP implementation, and torch's deprecations of its arguments."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from torch import nn


def require_feature(wrapper: nn.Module, feature: str, impl: str) -> None:
    """Skip the calling test when ``wrapper`` lacks ``feature`` (``no_sync``, ``join``).

    DESIGN.md: optional features are detected with ``hasattr``, and a test of a missing
    one is skipped with that reason.
    """
    if not hasattr(wrapper, feature):
        pytest.skip(f"--ddp-impl {impl} has no {feature}(), an optional feature")


@contextmanager
def quiet_broadcast_buffers_deprecation() -> Iterator[None]:
    """Silence torch 2.13's FutureWarning for ``broadcast_buffers``.

    The suites still pass ``broadcast_buffers=False``: every implementation accepts it,
    and its meaning (no buffer synchronisation at all) is what the claim is about.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        yield
