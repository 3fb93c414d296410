"""The Backend protocol the control plane calls, its errors and `load_backend`; the backends
in loopdev/, fuse/ and metadata/, and the loop-device layer they share (devices.py, loop.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from backends.io_faults import IoFault
from backends.performance import VolumeShape

ProgressCallback = Callable[[int], None]
"""Called with a percentage (0-100) while a long operation runs."""


LARGEST_EBS_VOLUME_GIB = 64 * 1024  # gp3, io2: 64 TiB
SNAPSHOT_BLOCK_SIZE = 512 * 1024  # the EBS direct APIs' block


@dataclass(frozen=True)
class SizeLimit:
    """A volume size the data dir cannot hold, and why, in words for a user."""

    largest_gib: int
    reason: str


class BackendError(Exception):
    """A data-plane failure; the message says what went wrong in words for a user."""


class OutOfSpace(BackendError):
    """The data dir has no room for the operation."""


class NoFreeDevice(BackendError):
    """No block device could be allocated for an attachment."""


class DeviceBusy(BackendError):
    """The device is in use (mounted or open) and a non-forced detach was asked for."""


class BackingStoreMissing(BackendError):
    """The volume's or snapshot's data is gone from the data dir."""


@dataclass
class Inventory:
    """What a backend finds on the machine, for the server to reconcile with its records."""

    volumes: set[str] = field(default_factory=set)  # volume ids with data
    snapshots: set[str] = field(default_factory=set)  # snapshot ids with data
    attached: dict[str, str] = field(default_factory=dict)  # volume id -> device path
    damaged: dict[str, str] = field(default_factory=dict)  # id -> what of its data is lost


class Backend(Protocol):
    """What the control plane asks of a data plane.

    A backend creates and deletes volumes' and snapshots' data, binds volumes to block
    devices and snapshots them. It keeps no control-plane state: the server tells it
    what to do, and it can rediscover what it has done (for reconcile after a crash).

    Every method may block and is called from a worker thread, never with the
    state store locked. Every method is idempotent: the server re-issues the
    operation after a crash, so doing it twice must have the effect of doing it once.
    Failures are BackendErrors, the subclasses named being the ones a caller tells
    apart; anything else is a bug, and the server fails the task that met it.
    """

    name: str
    latency: float
    """Seconds each data-plane step takes on purpose (the metadata backend's --latency),
    so that transitional states can be seen; 0 for backends that do real work."""

    def preflight(self) -> None:
        """Check that this machine has what the backend needs (root, devices).

        Touches nothing, the data dir least of all: called before the server takes the
        data-dir lock, so a user learns first what the machine lacks. Raises BackendError.
        """

    def start(self) -> None:
        """Prepare the backend (directories, mounts) before the server serves requests.

        Called once, after the server holds the data-dir lock and before anything else
        touches the data dir, so it may repair what a previous run left behind. Raises
        BackendError if it cannot.
        """

    def close(self) -> None:
        """Release what `start` acquired; attached devices stay attached where they can.

        Also called after a `start` that failed half-way, to undo what it did. A device
        that will not let go is logged, not raised.
        """

    def size_limit(self) -> SizeLimit | None:
        """The largest volume the data dir can hold, if below LARGEST_EBS_VOLUME_GIB.

        Known once `start` has run; the control plane refuses larger sizes up front.
        Raises nothing.
        """

    def create_volume(self, volume_id: str, size_gib: int, snapshot_id: str | None) -> None:
        """Create the volume's data, from `snapshot_id`'s data if given.

        Raises OutOfSpace, BackingStoreMissing (the snapshot's data is gone), BackendError.
        """

    def delete_volume(self, volume_id: str) -> None:
        """Release the volume's device and delete its data; nothing to delete is not an error.

        Raises BackendError.
        """

    def resize_volume(self, volume_id: str, size_gib: int) -> None:
        """Grow the volume's data, and an attached device's capacity, to `size_gib`.

        Raises OutOfSpace, BackingStoreMissing, BackendError.
        """

    def attach_volume(self, volume_id: str, device_name: str) -> str | None:
        """Bind the volume to a block device on this machine; return its path.

        Returns None for a backend without devices. Raises NoFreeDevice (none free, or
        it did not become usable), BackingStoreMissing, BackendError.
        """

    def volume_file(self, volume_id: str) -> Path | None:
        """The file holding the volume's data as a block device would show it, for an NBD
        export to another node; None for a backend without data or if it is missing.

        Raises nothing.
        """

    def detach_volume(self, volume_id: str, force: bool) -> None:
        """Release the volume's device and its links; not attached is not an error.

        Without `force`, returns once the kernel has let go of the device. Raises
        DeviceBusy (in use and not `force`, or not released in time), BackendError.
        """

    def set_performance(
        self, volume_id: str, shape: VolumeShape | None, credit_scale: float = 1.0
    ) -> bool:
        """Enforce EBS's performance model for `shape` on the volume's I/O from now on
        (None: no limits); `credit_scale` shrinks the burst buckets (performance.Shaper).

        Returns False if the volume's data path does not enforce it now (this backend
        cannot, or its device is attached without a policy layer). Raises nothing.
        """

    def burst_balance(self, volume_id: str) -> float | None:
        """The volume's burst bucket in percent (CloudWatch's BurstBalance); None when no
        model applies to it or its type has no bucket. Raises nothing."""

    def set_io_fault(self, volume_id: str, fault: IoFault | None) -> bool:
        """Apply `fault` to every I/O on the volume's device from now on (None: lift it).

        Returns False if the volume's data path does not apply it now (this backend
        cannot, or its device is attached without a policy layer). Raises nothing.
        """

    def create_snapshot(self, snapshot_id: str, volume_id: str, progress: ProgressCallback) -> None:
        """Capture the volume's current data as the snapshot (a mounted filesystem frozen).

        Raises OutOfSpace, BackingStoreMissing, BackendError.
        """

    def copy_snapshot(
        self, source_snapshot_id: str, snapshot_id: str, progress: ProgressCallback
    ) -> None:
        """Make `snapshot_id` a copy of `source_snapshot_id`'s data. Raises as create."""

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete the snapshot's data; nothing to delete is not an error. Raises BackendError."""

    # ---- volume copies and initialization ----------------------------------------------

    def copy_volume(self, source_volume_id: str, volume_id: str, size_gib: int) -> None:
        """Create `volume_id` as a crash-consistent copy of the source volume's current data
        (a mounted filesystem frozen meanwhile), grown to `size_gib`.

        Raises OutOfSpace, BackingStoreMissing (the source's data is gone), BackendError.
        """

    def restore_whole(self, volume_id: str) -> None:
        """Give a volume just restored from a snapshot all its data now, for a fast snapshot
        restore (EBS delivers such a volume fully initialized): a backend that restores
        lazily copies the rest here. Raises BackendError.
        """

    def initialization_bytes(self, volume_id: str, size_gib: int) -> int:
        """How many bytes of data the volume's initialization pass visits.

        Raises BackingStoreMissing, BackendError.
        """

    def initialize_volume(
        self, volume_id: str, size_gib: int, position: int, budget: int
    ) -> tuple[int, int]:
        """Visit (read, or copy where the volume still shares it) the volume's data from
        byte `position` on, about `budget` bytes of it; return (the position reached, the
        bytes of data visited). The pass is over once the position reaches the volume's
        size. Raises BackingStoreMissing, BackendError.
        """

    # ---- the EBS direct APIs: blocks of SNAPSHOT_BLOCK_SIZE by index -------------------

    def snapshot_blocks(self, snapshot_id: str) -> list[int]:
        """The indexes of the snapshot's blocks that hold data, ascending (never-written
        blocks are left out). Raises BackingStoreMissing, BackendError."""

    def read_snapshot_block(self, snapshot_id: str, index: int) -> bytes:
        """The SNAPSHOT_BLOCK_SIZE bytes of block `index` (zeros where never written).

        Raises BackingStoreMissing, BackendError.
        """

    def changed_blocks(self, first_snapshot_id: str, second_snapshot_id: str) -> list[int]:
        """Indexes of the blocks whose data differs between the two snapshots, ascending;
        a block written in only one of them counts. Raises BackingStoreMissing, BackendError.
        """

    def start_snapshot_data(self, snapshot_id: str, size_gib: int, parent: str | None) -> None:
        """Begin a snapshot written block by block: `parent`'s data, or zeros, at `size_gib`.

        Until `complete_snapshot_data` it is not a snapshot `inventory` reports. Raises
        OutOfSpace, BackingStoreMissing (the parent's data is gone), BackendError.
        """

    def write_snapshot_block(self, snapshot_id: str, index: int, data: bytes) -> None:
        """Write SNAPSHOT_BLOCK_SIZE bytes at block `index` of a snapshot being written;
        durable once `complete_snapshot_data` returns. Raises OutOfSpace, BackendError."""

    def complete_snapshot_data(self, snapshot_id: str) -> None:
        """Make the written snapshot durable and a snapshot like any other (idempotent).

        Raises OutOfSpace, BackingStoreMissing, BackendError.
        """

    def archive_snapshot(self, snapshot_id: str) -> None:
        """Move the snapshot's data to the archive tier (a full copy of its own, out of
        whatever it shares); it cannot be read until restored. Idempotent.

        Raises BackingStoreMissing, OutOfSpace, BackendError.
        """

    def restore_archived_snapshot(self, snapshot_id: str) -> None:
        """Bring an archived snapshot's data back so it can be read. Idempotent.

        Raises OutOfSpace, BackendError.
        """

    def inventory(self) -> Inventory | None:
        """What exists: data and bound devices. None for a backend that keeps no data.

        Also finishes what a crash interrupted inside the backend (half-written or
        half-deleted files), which never holds data anyone was told exists. Raises
        BackendError.
        """


BACKEND_NAMES = ("auto", "metadata", "loopdev", "fuse")


def default_backend() -> str:
    """loopdev where it can work (root, loop devices), else metadata."""
    if os.geteuid() == 0 and os.path.exists("/dev/loop-control"):
        return "loopdev"
    return "metadata"


def load_backend(
    name: str, data_dir: Path, *, latency: float = 0.0, loopdev_policy: str = "when-needed"
) -> Backend:
    """Construct the backend called `name` (or "auto") storing its data under `data_dir`;
    `loopdev_policy` says when loopdev attaches go through its policy layer."""
    if name == "auto":
        name = default_backend()
    if name == "metadata":
        from backends.metadata import MetadataBackend

        return MetadataBackend(latency=latency)
    if name == "loopdev":
        from backends.loopdev import LoopdevBackend

        return LoopdevBackend(data_dir, policy=loopdev_policy)
    if name == "fuse":
        try:
            from backends.fuse import FuseBackend
        except ImportError as missing:
            raise BackendError(
                f"the fuse backend needs pyfuse3 and trio ({missing}); install fakestor[fuse]"
            ) from None
        return FuseBackend(data_dir)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
