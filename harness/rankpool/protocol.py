"""What crosses between the controller and its ranks: plain data only.

Tasks and results travel over ``multiprocessing`` pipes, which pickle them. Only plain data
is allowed across (numbers, strings, ``torch.dtype``...): no tensors, no modules, no
exception objects. A rank reports an exception as its formatted traceback, so a result
never depends on unpickling the rank's objects in the controller.
"""

import dataclasses
import enum
import pathlib
from dataclasses import dataclass
from typing import Any

# Outcomes of one rank for one run.
PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
XFAILED = "xfailed"
HUNG = "hung"  # not done when the controller stopped waiting
DIED = "died"  # the process ended (exit code or signal) before reporting

OUTCOMES = (PASSED, FAILED, SKIPPED, XFAILED, HUNG, DIED)

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (tuple, list, set, frozenset)
_TORCH_PLAIN = {"dtype", "device", "Size"}

ALLOWED = (
    "None, bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size, "
    "enums, paths, dataclasses, and tuples/lists/sets/dicts of those"
)


class NotPlainData(TypeError):
    """A value that may not cross to the ranks; the message names it and says what may."""


@dataclass(frozen=True)
class RankResult:
    """What one rank did in one run.

    ``message`` is one line: the skip or xfail reason, the exception's last line, the exit
    code or signal of a rank that died, or how long a rank that hung was waited for.
    ``traceback`` is the formatted exception of a failed rank, ``stack`` the Python stack
    of every thread of a rank that hung, ``output`` what the rank wrote to stdout and
    stderr during the run (for a rank that died, the tail of its whole log).
    """

    rank: int
    outcome: str
    pid: int | None = None
    value: Any = None
    message: str = ""
    traceback: str = ""
    stack: str = ""
    output: str = ""
    exitcode: int | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == PASSED


def ensure_plain(name: str, value: Any) -> None:
    """Raise ``NotPlainData`` naming ``name`` (and where inside it) unless ``value`` is plain."""
    problem = _first_non_plain(value, name, set())
    if problem is not None:
        where, found = problem
        raise NotPlainData(
            f"{where} is a {_type_name(found)}, not plain data; only {ALLOWED} cross to the "
            f"ranks: pass plain values and build objects inside the function"
        )


def _first_non_plain(value: Any, where: str, seen: set[int]) -> tuple[str, Any] | None:
    if isinstance(value, (_SCALARS, enum.Enum | pathlib.PurePath)):
        return None
    kind = type(value)
    if kind.__module__ == "torch" and kind.__name__ in _TORCH_PLAIN:
        return None
    if id(value) in seen:
        return None
    seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_plain(key, f"{where} (a key)", seen)
            found = found or _first_non_plain(item, f"{where}[{key!r}]", seen)
            if found:
                return found
        return None
    if isinstance(value, _CONTAINERS):
        for index, item in enumerate(value):
            if found := _first_non_plain(item, f"{where}[{index}]", seen):
                return found
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            found = _first_non_plain(getattr(value, field.name), f"{where}.{field.name}", seen)
            if found:
                return found
        return None
    return where, value


def _type_name(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
