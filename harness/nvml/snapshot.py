"""Node snapshots: a node's NVML inventory and health as versioned JSON (docs/operators.md,
"Node snapshots"), taken from any ``Nvml`` and replayed by ``FakeNvml``.

Format ``/2`` added the per-GPU fields in ``ADDED_IN_2``. A ``/1`` file still loads: the fields
it lacks read as ``Unavailable(field, "NotInSnapshot")``, so checks needing them skip (and fail
under ``--acceptance``) rather than pass on a reading nobody took. Snapshots are written as
``/2``, where every field is required.
"""

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.files import write_atomic
from harness.nvml.interface import (
    METRICS,
    NOT_IN_SNAPSHOT,
    NVML_ERROR,
    TOPOLOGY_LEVELS,
    UNAVAILABLE_REASONS,
    GpuLostError,
    Reading,
    Unavailable,
)

if TYPE_CHECKING:
    from harness.nvml.interface import Nvml

FORMAT = "gpu-harness-snapshot/2"
FORMAT_1 = "gpu-harness-snapshot/1"
# Per-GPU events, next to the readings of METRICS: the XIDs seen while the snapshot was taken
# (python -m harness inventory) or, edited in, during the run a fake node replays.
XID_EVENTS = "xid_events"
ADDED_IN_2 = ("temperature_slowdown_c", "temperature_shutdown_c", "nvlink_links_total", XID_EVENTS)


class _Lost:
    """A reading that failed with NVML_ERROR_GPU_IS_LOST; JSON ``{"error": "GpuIsLost"}``."""

    def __repr__(self) -> str:
        return "LOST"


LOST = _Lost()


@dataclass
class Snapshot:
    driver_version: str
    cuda_version: str
    # metric -> Reading or LOST, every metric of METRICS; XID_EVENTS -> tuple of int, an
    # Unavailable or LOST (absent: not recorded)
    gpus: list[dict[str, Any]]
    topology: dict[tuple[str, str], str | Unavailable] = field(default_factory=dict)
    host: str = ""
    taken_at: str = ""


class SnapshotError(ValueError):
    """A snapshot file that cannot be used; the message is one line naming file and problem."""


def take_snapshot(nvml: "Nvml", host: str | None = None) -> Snapshot:
    """Every reading of every GPU, the topology of every pair, and the XIDs seen meanwhile."""
    nvml.watch_xid()
    gpus = []
    for uuid in nvml.gpu_uuids():
        gpu: dict[str, Any] = {}
        for metric in METRICS:
            try:
                gpu[metric] = nvml.read(uuid, metric)
            except GpuLostError:
                gpu[metric] = LOST
        gpu["uuid"] = uuid
        gpus.append(gpu)
    uuids = nvml.gpu_uuids()
    topology = {}
    for i, a in enumerate(uuids):
        for b in uuids[i + 1 :]:
            try:
                topology[(a, b)] = nvml.topology(a, b)
            except GpuLostError:
                topology[(a, b)] = Unavailable("topology", "GpuIsLost")
    for gpu in gpus:
        try:
            gpu[XID_EVENTS] = nvml.xid_events(gpu["uuid"])
        except GpuLostError:
            gpu[XID_EVENTS] = LOST
    return Snapshot(
        driver_version=nvml.driver_version(),
        cuda_version=nvml.cuda_version(),
        gpus=gpus,
        topology=topology,
        host=socket.gethostname() if host is None else host,
        taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def xid_events_of(gpu: dict[str, Any]) -> Any:
    """A GPU's XID events as recorded, or unavailable when the snapshot has none."""
    return gpu.get(XID_EVENTS, Unavailable(XID_EVENTS, NOT_IN_SNAPSHOT))


def encode(value: Any) -> Any:
    if value is LOST or (isinstance(value, Unavailable) and value.reason == "GpuIsLost"):
        return {"error": "GpuIsLost"}
    if isinstance(value, Unavailable):
        return {"unavailable": value.reason}
    if isinstance(value, tuple):
        return list(value)
    return value


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "host": snapshot.host,
        "taken_at": snapshot.taken_at,
        "driver_version": snapshot.driver_version,
        "cuda_version": snapshot.cuda_version,
        "gpus": [
            {
                **{metric: encode(gpu[metric]) for metric in METRICS},
                XID_EVENTS: encode(xid_events_of(gpu)),
            }
            for gpu in snapshot.gpus
        ],
        "topology": [
            {"gpus": [a, b], "level": encode(level)} for (a, b), level in snapshot.topology.items()
        ],
    }


def dumps(snapshot: Snapshot) -> str:
    return json.dumps(to_json(snapshot), indent=2) + "\n"


def write_snapshot(snapshot: Snapshot, path: str | os.PathLike[str]) -> None:
    """Write atomically: a temporary file in the same directory, then a rename."""
    write_atomic(path, dumps(snapshot).encode("utf-8"))


# ---- loading and validation -------------------------------------------------------------

TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    tuple: "a list of strings",
    XID_EVENTS: "a list of integers",
    list: "a list",
    dict: "an object",
}


class _Invalid(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)


def shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def expected(where: str, what: str, value: Any) -> _Invalid:
    return _Invalid(where, f"expected {what}, got {shown(value)}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_reading(where: str, metric: str, kind: type | str, value: Any) -> Any:
    if isinstance(value, dict):
        if value == {"error": "GpuIsLost"}:
            return LOST
        if set(value) == {"unavailable"}:
            reasons = (*UNAVAILABLE_REASONS, NOT_IN_SNAPSHOT)
            reason = value["unavailable"]
            # NVML's own error where an optional facility failed (registering for XID events).
            known = reason in reasons or (isinstance(reason, str) and reason.startswith(NVML_ERROR))
            if not known:
                raise _Invalid(
                    f"{where}.unavailable",
                    f'expected one of {", ".join(reasons)} or "{NVML_ERROR}...", '
                    f"got {shown(reason)}",
                )
            return Unavailable(metric, reason)
        raise expected(
            where,
            f'{TYPE_NAMES[kind]}, {{"unavailable": REASON}} or {{"error": "GpuIsLost"}}',
            value,
        )
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = is_int(value)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif kind == XID_EVENTS:
        ok = isinstance(value, list) and all(is_int(v) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise expected(where, TYPE_NAMES[kind], value)
    return value


def field_of(data: dict[str, Any], name: str, kind: type, where: str = "") -> Any:
    key = f"{where}.{name}" if where else name
    if name not in data:
        raise _Invalid(key, "missing")
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise expected(key, TYPE_NAMES.get(kind, kind.__name__), value)
    return value


def from_json(data: Any) -> Snapshot:
    if not isinstance(data, dict):
        raise expected("", "a JSON object", data)
    if data.get("format") not in (FORMAT, FORMAT_1):
        raise _Invalid(
            "format", f"expected {FORMAT!r} or {FORMAT_1!r}, got {shown(data.get('format'))}"
        )
    absent = ADDED_IN_2 if data["format"] == FORMAT_1 else ()
    fields: dict[str, type | str] = {**METRICS, XID_EVENTS: XID_EVENTS}
    gpus_json = field_of(data, "gpus", list)
    gpus = []
    for i, gpu_json in enumerate(gpus_json):
        where = f"gpus[{i}]"
        if not isinstance(gpu_json, dict):
            raise expected(where, "an object", gpu_json)
        unknown = sorted(set(gpu_json) - set(fields).difference(absent))
        if unknown:
            raise _Invalid(f"{where}.{unknown[0]}", "unknown field")
        gpu = {}
        for metric, kind in fields.items():
            if metric in absent:
                gpu[metric] = Unavailable(metric, NOT_IN_SNAPSHOT)
            elif metric not in gpu_json:
                raise _Invalid(f"{where}.{metric}", "missing")
            else:
                gpu[metric] = decode_reading(f"{where}.{metric}", metric, kind, gpu_json[metric])
        if not isinstance(gpu["uuid"], str):
            raise expected(f"{where}.uuid", "a string", gpu_json["uuid"])
        gpus.append(gpu)
    uuids = [gpu["uuid"] for gpu in gpus]
    for i, uuid in enumerate(uuids):
        if uuids.index(uuid) != i:
            raise _Invalid(f"gpus[{i}].uuid", f"duplicate UUID {uuid}")
    topology: dict[tuple[str, str], str | Unavailable] = {}
    for i, pair in enumerate(field_of(data, "topology", list)):
        where = f"topology[{i}]"
        if not isinstance(pair, dict):
            raise expected(where, "an object", pair)
        ends = field_of(pair, "gpus", list, where)
        if len(ends) != 2 or any(end not in uuids for end in ends):
            raise expected(f"{where}.gpus", "two UUIDs of listed GPUs", ends)
        if "level" not in pair:
            raise _Invalid(f"{where}.level", "missing")
        level = decode_reading(f"{where}.level", "topology", str, pair["level"])
        if level is LOST:
            level = Unavailable("topology", "GpuIsLost")
        elif isinstance(level, str) and level not in TOPOLOGY_LEVELS:
            raise expected(f"{where}.level", f"one of {', '.join(TOPOLOGY_LEVELS)}", level)
        topology[(ends[0], ends[1])] = level
    return Snapshot(
        driver_version=field_of(data, "driver_version", str),
        cuda_version=field_of(data, "cuda_version", str),
        gpus=gpus,
        topology=topology,
        host=data.get("host", "") if isinstance(data.get("host", ""), str) else "",
        taken_at=data.get("taken_at", "") if isinstance(data.get("taken_at", ""), str) else "",
    )


def load_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and validate a snapshot file; any problem is a one-line ``SnapshotError`` naming the
    file and the field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SnapshotError(
            f"{path}: cannot read: {getattr(err, 'strerror', None) or err}"
        ) from None
    return parse_snapshot(text, str(path))


def parse_snapshot(text: str, where: str) -> Snapshot:
    """The snapshot in JSON ``text``, read from ``where`` (named in every error)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SnapshotError(
            f"{where}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    try:
        return from_json(data)
    except _Invalid as err:
        raise SnapshotError(f"{where}: {err}") from None


__all__ = [
    "FORMAT",
    "FORMAT_1",
    "LOST",
    "XID_EVENTS",
    "Reading",
    "Snapshot",
    "SnapshotError",
    "load_snapshot",
    "parse_snapshot",
]
