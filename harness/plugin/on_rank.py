"""pytest's side of a rank: the adapter the rank pool's ranks import to run tests
(``harness.rankpool.worker``).

A rank imports the test module from the file pytest collected, with its asserts rewritten as
pytest rewrites them, so a failed ``assert a == b`` in a rank reports its values as it would
in-process; pytest's skip and xfail exceptions become the rank's skip and xfail outcomes.
"""

import ast
import functools
import importlib.machinery
from typing import Any

import pytest

from harness.rankpool import loading, protocol


def prepare() -> None:
    """Explain failed comparisons (``assert [1, 2] == [1, 3]``) in rewritten asserts as pytest
    does, through its ``assertrepr_compare``; without pytest's internals, plain explanations."""
    try:
        from _pytest.assertion import util
    except ImportError:
        return

    class _TerminalWriter:
        @staticmethod
        def _highlight(source: str, lexer: str = "python") -> str:
            return source

    class _Config:
        VERBOSITY_ASSERTIONS = "assertions"

        def get_verbosity(self, *args: Any) -> int:
            return 1  # full diffs: a rank's run cannot be repeated with -v

        def get_terminal_writer(self) -> _TerminalWriter:
            return _TerminalWriter()

        def getoption(self, *args: Any, **kwargs: Any) -> int:
            return 1

    config = _Config()

    def reprcompare(op: str, left: object, right: object) -> str | None:
        try:
            explanation = util.assertrepr_compare(config, op, left, right)
        except Exception:
            return None
        if not explanation:
            return None
        lines = [line.replace("\n", "\\n") for line in explanation]
        return "\n~".join(lines).replace("%", "%%")

    util._reprcompare = reprcompare


class RewritingLoader(importlib.machinery.SourceFileLoader):
    """Compiles with pytest's assertion rewriting, and writes no bytecode cache (a cached
    rewritten module would be picked up by a later plain import)."""

    def get_code(self, fullname: str) -> Any:
        source = self.get_data(self.path)
        try:
            from _pytest.assertion.rewrite import rewrite_asserts

            tree = ast.parse(source, filename=self.path)
            rewrite_asserts(tree, source, self.path)
            return compile(tree, self.path, "exec", dont_inherit=True)
        except (ImportError, TypeError, AttributeError):  # a pytest without this internal API
            return compile(source, self.path, "exec", dont_inherit=True)


load_function = functools.partial(loading.load_function, loader=RewritingLoader)


def outcome(err: BaseException) -> tuple[str, str] | None:
    """A skip or an xfail raised in the test body, with its reason; None for a failure."""
    if isinstance(err, pytest.skip.Exception):
        return protocol.SKIPPED, err.msg or "skipped"
    if isinstance(err, pytest.xfail.Exception):
        return protocol.XFAILED, err.msg or "xfailed"
    return None
