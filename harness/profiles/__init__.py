"""Node profiles: what a node is expected to have, and how fast it is expected to be.

A profile is a TOML file (its keys: ``harness.profiles.loading``). The shipped ones are package
data (``harness.profiles.resources``): ``load_profile("h200-1x")`` reads the shipped
``h200-1x.toml``, and anything that looks like a path is read as that file.
``choose_profile`` picks the shipped profile of a node's GPU model and count (``--profile
auto``). ``Profile.reference(figure)`` is what a figure is judged against, and
``Reference.judge`` the verdict.

Check names are ``harness.checks.Check``: a test implementing one is marked
``@pytest.mark.required_check(Check.HEALTH_ECC)``, and under ``--acceptance`` a skip of a test
whose check the profile requires is a failure (a check that could not run must not pass
silently). The profile requires ``[required].checks`` plus ``performance.<figure>`` for every
``[performance]`` figure whose ``required`` is true.
"""

import os
from pathlib import Path

from harness.nvml.snapshot import Snapshot, SnapshotError, load_snapshot, parse_snapshot
from harness.profiles.choose import NodeModels, choose_profile, expects
from harness.profiles.loading import parse_profile
from harness.profiles.model import (
    DEFAULT_SLOWDOWN_MARGIN_C,
    USABLE_MEMORY_ALLOWANCE_MIB,
    Health,
    Inventory,
    Profile,
    ProfileError,
    Reference,
    Status,
    Verdict,
    version_tuple,
)
from harness.profiles.resources import (
    PROFILE_SUFFIX,
    SNAPSHOT_SUFFIX,
    is_path,
    shipped_profile,
    shipped_profiles,
    shipped_snapshot,
    shipped_snapshots,
)


def load_profile(spec: str | os.PathLike[str]) -> Profile:
    """The profile a shipped NAME or a PATH names, validated; ``ProfileError`` otherwise."""
    if is_path(spec, PROFILE_SUFFIX):
        path = Path(spec)
        where = _display(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProfileError(f"{where}: no such file") from None
        except UnicodeDecodeError as err:
            raise ProfileError(f"{where}: not valid TOML: not UTF-8 ({err.reason})") from None
        except OSError as err:
            raise ProfileError(f"{where}: cannot read: {err.strerror or err}") from None
        return parse_profile(text, where)
    found = shipped_profile(str(spec))
    if found is None:
        shipped = ", ".join(shipped_profiles()) or "none"
        raise ProfileError(
            f"--profile {spec}: no such profile (shipped: {shipped}) and no such file"
        )
    return parse_profile(*found)


def load_shipped_profiles() -> list[Profile]:
    return [load_profile(name) for name in shipped_profiles()]


def load_node_snapshot(spec: str | os.PathLike[str]) -> Snapshot:
    """The node snapshot a shipped NAME (``h100-sxm-x8``) or a PATH names; ``SnapshotError``."""
    if is_path(spec, SNAPSHOT_SUFFIX):
        return load_snapshot(spec)
    found = shipped_snapshot(str(spec))
    if found is None:
        shipped = ", ".join(shipped_snapshots()) or "none"
        raise SnapshotError(f"{spec}: no such snapshot (shipped: {shipped}) and no such file")
    return parse_snapshot(*found)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


__all__ = [
    "DEFAULT_SLOWDOWN_MARGIN_C",
    "USABLE_MEMORY_ALLOWANCE_MIB",
    "Health",
    "Inventory",
    "NodeModels",
    "Profile",
    "ProfileError",
    "Reference",
    "Status",
    "Verdict",
    "choose_profile",
    "expects",
    "load_node_snapshot",
    "load_profile",
    "load_shipped_profiles",
    "shipped_profiles",
    "shipped_snapshots",
    "version_tuple",
]
