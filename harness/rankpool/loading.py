"""How a rank finds the function to run: module name, file path and dotted qualname.

A rank imports the test module itself, by the name pytest gave it (``suites.ddp.test_x``
under pytest's default prepend import mode), from the file pytest collected. Asserts in
that module are rewritten as pytest rewrites them, so a failed ``assert a == b`` in a rank
reports its values as it would in-process.
"""

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


def load_function(module: str, qualname: str, path: str | None = None) -> Callable[..., Any]:
    """The callable ``module:qualname``; a class on the way is instantiated with no arguments
    (a test method of a test class), as pytest does."""
    target: Any = import_module(module, path)
    parts = qualname.split(".")
    for part in parts[:-1]:
        target = getattr(target, part)
    if isinstance(target, type):
        target = target()
    return getattr(target, parts[-1])


def import_module(name: str, path: str | None = None) -> ModuleType:
    """``sys.modules[name]``, else the module at ``path`` under ``name`` with asserts
    rewritten, else a plain import of ``name``."""
    if name in sys.modules:
        return sys.modules[name]
    if path is None or not path.endswith(".py"):
        return importlib.import_module(name)
    parent = name.rpartition(".")[0]
    if parent:
        with contextlib.suppress(ImportError):  # so the module's relative imports resolve
            importlib.import_module(parent)
    loader = _RewritingLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class _RewritingLoader(importlib.machinery.SourceFileLoader):
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


def install_assert_explanations() -> None:
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
