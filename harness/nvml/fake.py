"""A fake NVML that replays a node snapshot: CPU CI, replays of real nodes, injected faults."""

from harness.nvml.interface import GpuLostError, Nvml, Reading, Unavailable, check_metric
from harness.nvml.snapshot import LOST, Snapshot, xid_events_of


class FakeNvml(Nvml):
    """Readings from a ``Snapshot``; a reading recorded as lost raises ``GpuLostError``."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.gpus = {gpu["uuid"]: gpu for gpu in snapshot.gpus}

    def driver_version(self) -> str:
        return self.snapshot.driver_version

    def cuda_version(self) -> str:
        return self.snapshot.cuda_version

    def gpu_uuids(self) -> list[str]:
        return list(self.gpus)

    def read(self, uuid: str, metric: str) -> Reading:
        check_metric(metric)
        value = self.gpus[uuid][metric]
        if value is LOST:
            raise GpuLostError(uuid, metric)
        return value

    def xid_events(self, uuid: str) -> tuple[int, ...] | Unavailable:
        """The snapshot's ``xid_events`` of the GPU: a replayed run sees them as its own."""
        events = xid_events_of(self.gpus[uuid])
        if events is LOST:
            raise GpuLostError(uuid, "xid_events")
        return events

    def topology(self, uuid_a: str, uuid_b: str) -> str | Unavailable:
        for uuid in (uuid_a, uuid_b):
            if uuid not in self.gpus:
                raise KeyError(uuid)
        pair = self.snapshot.topology
        if (uuid_a, uuid_b) in pair:
            return pair[(uuid_a, uuid_b)]
        if (uuid_b, uuid_a) in pair:
            return pair[(uuid_b, uuid_a)]
        return Unavailable("topology", "NotSupported")
