"""The profiles and example node snapshots shipped inside the package, read with
``importlib.resources`` so that an installed harness (a wheel, not only a checkout) finds them.

They live in ``harness/profiles/shipped/`` (``NAME.toml``) and its ``snapshots/``
(``NAME.json``); the checkout's top-level ``profiles`` is a link to that folder. A spec is a
shipped NAME unless it looks like a path (has a path separator, or ends in the file's
suffix), which is then read from the file system.
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

FOLDER = "harness/profiles/shipped"  # as messages name it, installed or not
PROFILE_SUFFIX = ".toml"
SNAPSHOT_SUFFIX = ".json"
SNAPSHOTS = "snapshots"


def _folder() -> Traversable:
    return resources.files("harness.profiles").joinpath("shipped")


def _names(folder: Traversable, suffix: str) -> list[str]:
    return sorted(
        entry.name.removesuffix(suffix)
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(suffix)
    )


def shipped_profiles() -> list[str]:
    """The names of the shipped profiles."""
    return _names(_folder(), PROFILE_SUFFIX)


def shipped_snapshots() -> list[str]:
    """The names of the shipped example snapshots."""
    return _names(_folder().joinpath(SNAPSHOTS), SNAPSHOT_SUFFIX)


def is_path(spec: str | os.PathLike[str], suffix: str) -> bool:
    text = os.fspath(spec)
    return isinstance(spec, Path) or "/" in text or os.sep in text or text.endswith(suffix)


def shipped_profile(name: str) -> tuple[str, str] | None:
    """(TOML text, where) of the shipped profile ``name``; None when none is called that."""
    return _read(_folder(), name, PROFILE_SUFFIX, "")


def shipped_snapshot(name: str) -> tuple[str, str] | None:
    """(JSON text, where) of the shipped snapshot ``name``; None when none is called that."""
    return _read(_folder().joinpath(SNAPSHOTS), name, SNAPSHOT_SUFFIX, f"{SNAPSHOTS}/")


def _read(folder: Traversable, name: str, suffix: str, sub: str) -> tuple[str, str] | None:
    entry = folder.joinpath(f"{name}{suffix}")
    if not entry.is_file():
        return None
    return entry.read_text(encoding="utf-8"), f"{FOLDER}/{sub}{name}{suffix}"
