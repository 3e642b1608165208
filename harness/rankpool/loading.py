"""How a rank finds the function to run: module name, file path and dotted qualname.

A rank imports the function's module by the name the controller knows it under (a test module
is ``suites.ddp.test_x`` under pytest's default prepend import mode), from the file given,
with the loader given: ``importlib``'s own by default; the pytest plugin's adapter passes one
that rewrites asserts as pytest does (``harness.plugin.on_rank``).
"""

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

Loader = Callable[[str, str], importlib.machinery.SourceFileLoader]


def load_function(
    module: str,
    qualname: str,
    path: str | None = None,
    loader: Loader = importlib.machinery.SourceFileLoader,
) -> Callable[..., Any]:
    """The callable ``module:qualname``; a class on the way is instantiated with no arguments
    (a test method of a test class), as pytest does."""
    target: Any = import_module(module, path, loader)
    parts = qualname.split(".")
    for part in parts[:-1]:
        target = getattr(target, part)
    if isinstance(target, type):
        target = target()
    return getattr(target, parts[-1])


def import_module(
    name: str,
    path: str | None = None,
    loader: Loader = importlib.machinery.SourceFileLoader,
) -> ModuleType:
    """``sys.modules[name]``, else the module at ``path`` under ``name`` through ``loader``,
    else a plain import of ``name``."""
    if name in sys.modules:
        return sys.modules[name]
    if path is None or not path.endswith(".py"):
        return importlib.import_module(name)
    parent = name.rpartition(".")[0]
    if parent:
        with contextlib.suppress(ImportError):  # so the module's relative imports resolve
            importlib.import_module(parent)
    source_loader = loader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=source_loader)
    if spec is None:
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        source_loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
