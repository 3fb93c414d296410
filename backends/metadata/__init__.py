"""The metadata backend: volumes and snapshots as records only, no data, devices or root
(as moto offers); `latency` makes each data-plane step take that long, as on real EBS.
Through the EBS direct APIs its snapshots list no blocks, read as zeros and drop writes.
"""

from __future__ import annotations

import time
from pathlib import Path

from backends import SNAPSHOT_BLOCK_SIZE, Inventory, ProgressCallback, SizeLimit
from backends.io_faults import IoFault
from backends.performance import VolumeShape

GIB = 1024**3


class MetadataBackend:
    """A backend that stores nothing; each operation just takes `latency` seconds."""

    name = "metadata"

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    def _wait(self, progress: ProgressCallback | None = None) -> None:
        if not self.latency:
            return
        steps = 4 if progress else 1
        for step in range(1, steps + 1):
            time.sleep(self.latency / steps)
            if progress and step < steps:
                progress(100 * step // steps)

    def preflight(self) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def size_limit(self) -> SizeLimit | None:
        return None

    def create_volume(self, volume_id: str, size_gib: int, snapshot_id: str | None) -> None:
        self._wait()

    def delete_volume(self, volume_id: str) -> None:
        self._wait()

    def resize_volume(self, volume_id: str, size_gib: int) -> None:
        self._wait()

    def attach_volume(self, volume_id: str, device_name: str) -> str | None:
        self._wait()
        return None

    def set_performance(
        self, volume_id: str, shape: VolumeShape | None, credit_scale: float = 1.0
    ) -> bool:
        return shape is None  # no data path

    def burst_balance(self, volume_id: str) -> float | None:
        return None

    def detach_volume(self, volume_id: str, force: bool) -> None:
        self._wait()

    def volume_file(self, volume_id: str) -> Path | None:
        return None

    def set_io_fault(self, volume_id: str, fault: IoFault | None) -> bool:
        return False  # no data, no I/O to fault

    def create_snapshot(self, snapshot_id: str, volume_id: str, progress: ProgressCallback) -> None:
        self._wait(progress)

    def copy_snapshot(
        self, source_snapshot_id: str, snapshot_id: str, progress: ProgressCallback
    ) -> None:
        self._wait(progress)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self._wait()

    def copy_volume(self, source_volume_id: str, volume_id: str, size_gib: int) -> None:
        self._wait()

    def restore_whole(self, volume_id: str) -> None:
        pass  # no data

    def initialization_bytes(self, volume_id: str, size_gib: int) -> int:
        return size_gib * GIB  # no data here: as EBS, which initializes every block

    def initialize_volume(
        self, volume_id: str, size_gib: int, position: int, budget: int
    ) -> tuple[int, int]:
        reached = min(position + budget, size_gib * GIB)
        return reached, reached - position

    def snapshot_blocks(self, snapshot_id: str) -> list[int]:
        return []

    def read_snapshot_block(self, snapshot_id: str, index: int) -> bytes:
        return bytes(SNAPSHOT_BLOCK_SIZE)

    def changed_blocks(self, first_snapshot_id: str, second_snapshot_id: str) -> list[int]:
        return []

    def start_snapshot_data(self, snapshot_id: str, size_gib: int, parent: str | None) -> None:
        self._wait()

    def write_snapshot_block(self, snapshot_id: str, index: int, data: bytes) -> None:
        pass

    def complete_snapshot_data(self, snapshot_id: str) -> None:
        self._wait()

    def archive_snapshot(self, snapshot_id: str) -> None:
        self._wait()

    def restore_archived_snapshot(self, snapshot_id: str) -> None:
        self._wait()

    def inventory(self) -> Inventory | None:
        return None
