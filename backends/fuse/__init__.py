"""The fuse backend: volumes as files a FUSE filesystem (fs.py) serves from the copy-on-write
chunk store (chunks.py), attached through the same device layer as loopdev's image files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path

from backends import (
    SNAPSHOT_BLOCK_SIZE,
    BackendError,
    BackingStoreMissing,
    Inventory,
    OutOfSpace,
    ProgressCallback,
    SizeLimit,
)
from backends.devices import LoopDevices
from backends.fuse import archive
from backends.fuse.check import check_store
from backends.fuse.chunk_files import CHUNK_SIZE
from backends.fuse.chunks import (
    ChunkStore,
    ChunkStoreError,
    ChunkStoreFull,
    NoSuchImage,
)
from backends.fuse.faults import IoFaults
from backends.fuse.fs import MountedFilesystem
from backends.io_faults import IoFault
from backends.performance import Shaper, VolumeShape
from fakestor.mounts import is_mounted

log = logging.getLogger(__name__)

GIB = 1024**3
FLUSH_INTERVAL = 1.0  # seconds between background commits of the chunk store's map changes


class FuseBackend:
    """Volumes as files served from the chunk store, attached with loop devices.

    The filesystem (pyfuse3 on trio) runs in the server process; clients cannot tell
    its volumes from loopdev's. Snapshots share every unchanged chunk, and restores
    are instant. Layout under the data dir: fuse/blocks.db and fuse/chunks/ (the chunk
    store), fuse/mnt/ (the mount point: mnt/volumes/<vol-id>, mnt/snapshots/<snap-id>).
    A snapshot written through the EBS direct APIs is the writable image
    writing-<snap-id> until it completes; its blocks are the store's chunks.
    """

    name = "fuse"
    latency = 0.0

    def __init__(self, data_dir: Path, dev_dir: Path = Path("/dev")) -> None:
        self.fuse_dir = data_dir / "fuse"
        self.mountpoint = self.fuse_dir / "mnt"
        self.archive_dir = self.fuse_dir / "archive"  # archived snapshots, a file each
        self.volumes_dir = self.mountpoint / "volumes"
        self.devices = LoopDevices(self.volumes_dir, dev_dir=dev_dir)
        self.chunk_store: ChunkStore | None = None
        self.filesystem: MountedFilesystem | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._lost: dict[str, int] = {}  # image -> chunks lost, found by the check at start
        self.shapers: dict[str, Shaper] = {}  # volume -> its EBS performance model, if on
        self.io_faults = IoFaults()

    def _chunk_store(self) -> ChunkStore:
        if self.chunk_store is None:
            raise BackendError("the fuse backend is not started")
        return self.chunk_store

    # ---- lifecycle ------------------------------------------------------------------

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise BackendError(
                "the fuse backend needs root (FUSE mount, loop devices); run as root or use "
                "--backend metadata"
            )
        if not os.path.exists("/dev/fuse"):
            raise BackendError("/dev/fuse is missing: load the fuse module (modprobe fuse)")
        if not os.access("/dev/loop-control", os.R_OK | os.W_OK):
            raise BackendError("/dev/loop-control is missing: load the loop module")

    def start(self) -> None:
        self._release_stale()
        # The server holds the data-dir lock, so no writer of the last run is left: what
        # it wrote and never committed is garbage now.
        self.fuse_dir.mkdir(parents=True, exist_ok=True)
        report = check_store(self.fuse_dir, repair=True)
        for line in report.lines():
            log.warning("block store check: %s", line)
        self._lost = report.lost_chunks
        self.chunk_store = ChunkStore(self.fuse_dir)
        self.filesystem = MountedFilesystem(self.chunk_store, self.mountpoint)
        self.filesystem.operations.shapers = self.shapers
        self.filesystem.operations.faults = self.io_faults
        try:
            self.filesystem.start()
        except RuntimeError as failure:
            raise BackendError(str(failure)) from None
        self._flusher = threading.Thread(target=self._flush_regularly, name="fakestor-flush",
                                         daemon=True)  # fmt: skip
        self._flusher.start()

    def _release_stale(self) -> None:
        """Undo what a crashed run left: loop devices on its dead mount, and the mount."""
        self.devices.release_all("left bound by the previous run")
        # A dead FUSE mount answers every stat with ENOTCONN: find it in the mount table.
        if is_mounted(self.mountpoint):
            log.warning("unmounting the previous run's FUSE mount at %s", self.mountpoint)
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        self.mountpoint.mkdir(parents=True, exist_ok=True)

    def _flush_regularly(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            try:
                self._chunk_store().commit_changes()
            except (OSError, ChunkStoreError, BackendError) as failure:
                log.warning("periodic flush of the block store failed: %s", failure)

    def close(self) -> None:
        # Unlike image files, the served files vanish with this process: release the loop
        # devices on them rather than leave dead devices behind. The attachments stay
        # recorded, and the next start binds and links them again.
        self.io_faults.close()  # I/O held by an impaired volume fails now
        self.devices.release_all("as the block store stops")
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(10)
        if self.filesystem is not None:
            self.filesystem.stop()
        if self.chunk_store is not None:
            self.chunk_store.close()
            self.chunk_store = None

    def size_limit(self) -> SizeLimit | None:
        return None  # a volume is chunks, not one file: any EBS size fits

    # ---- data -----------------------------------------------------------------------

    def _translate(self, failure: ChunkStoreError, what: str) -> BackendError:
        if isinstance(failure, ChunkStoreFull):
            return OutOfSpace(f"no space left in the data dir to {what}")
        if isinstance(failure, NoSuchImage):
            return BackingStoreMissing(str(failure))
        return BackendError(f"cannot {what}: {failure}")

    def create_volume(self, volume_id: str, size_gib: int, snapshot_id: str | None) -> None:
        chunks = self._chunk_store()
        try:
            if snapshot_id is not None and snapshot_id not in chunks.images:
                raise BackingStoreMissing(f"the data of snapshot {snapshot_id} is missing")
            chunks.create(volume_id, size_gib * GIB, source=snapshot_id)
            if snapshot_id is not None:
                chunks.resize(volume_id, max(size_gib * GIB, chunks.image(snapshot_id).size))
        except ChunkStoreError as failure:
            raise self._translate(failure, f"create {volume_id}") from None
        except OSError as failure:
            raise BackendError(f"cannot create {volume_id}: {failure}") from None

    def delete_volume(self, volume_id: str) -> None:
        self.detach_volume(volume_id, force=True)
        try:
            self._chunk_store().delete(volume_id)
        except (ChunkStoreError, OSError) as failure:
            raise BackendError(f"cannot delete {volume_id}: {failure}") from None

    def resize_volume(self, volume_id: str, size_gib: int) -> None:
        chunks = self._chunk_store()
        try:
            if chunks.image(volume_id).size < size_gib * GIB:
                chunks.resize(volume_id, size_gib * GIB)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"resize {volume_id}") from None
        assert self.filesystem is not None
        self.filesystem.invalidate(volume_id)
        os.stat(self.volume_image(volume_id))  # the kernel re-reads the new size
        self.devices.set_capacity(volume_id)

    def volume_image(self, volume_id: str) -> Path:
        return self.devices.file_of(volume_id)

    # ---- devices --------------------------------------------------------------------

    def attach_volume(self, volume_id: str, device_name: str) -> str | None:
        return self.devices.attach(volume_id, device_name)

    def detach_volume(self, volume_id: str, force: bool) -> None:
        if force:
            self.io_faults.release_waiting(volume_id)
        self.devices.detach(volume_id, force)

    def set_performance(
        self, volume_id: str, shape: VolumeShape | None, credit_scale: float = 1.0
    ) -> bool:
        if shape is None:
            self.shapers.pop(volume_id, None)
        elif volume_id in self.shapers:
            self.shapers[volume_id].reshape(shape)
        else:
            self.shapers[volume_id] = Shaper(shape, credit_scale)
        return True

    def burst_balance(self, volume_id: str) -> float | None:
        shaper = self.shapers.get(volume_id)
        return shaper.burst_balance() if shaper is not None else None

    def volume_file(self, volume_id: str) -> Path | None:
        file = self.devices.file_of(volume_id)
        try:
            return file if file.exists() else None
        except OSError:  # the FUSE mount is gone
            return None

    def set_io_fault(self, volume_id: str, fault: IoFault | None) -> bool:
        self.io_faults.set(volume_id, fault)
        return True

    # ---- snapshots ------------------------------------------------------------------

    def create_snapshot(self, snapshot_id: str, volume_id: str, progress: ProgressCallback) -> None:
        chunks = self._chunk_store()
        if snapshot_id in chunks.images:
            return
        if volume_id not in chunks.images:
            raise BackingStoreMissing(f"the data of {volume_id} is missing from the block store")
        try:
            # Freeze a mounted filesystem, then freeze the map: O(chunks), no data copied.
            with self.devices.frozen(volume_id):
                chunks.flush()
                chunks.create(snapshot_id, chunks.image(volume_id).size, source=volume_id)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"snapshot {volume_id}") from None

    def copy_snapshot(
        self, source_snapshot_id: str, snapshot_id: str, progress: ProgressCallback
    ) -> None:
        chunks = self._chunk_store()
        try:
            source = chunks.image(source_snapshot_id)
            chunks.create(snapshot_id, source.size, source=source_snapshot_id)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"copy {source_snapshot_id}") from None

    def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            self._chunk_store().delete(_writing(snapshot_id))
            self._chunk_store().delete(f"restoring-{snapshot_id}")
            self._chunk_store().delete(snapshot_id)
            archive.delete(self.archive_dir, snapshot_id)
        except (ChunkStoreError, OSError) as failure:
            raise BackendError(f"cannot delete {snapshot_id}: {failure}") from None

    # ---- volume copies and initialization --------------------------------------------

    def copy_volume(self, source_volume_id: str, volume_id: str, size_gib: int) -> None:
        chunks = self._chunk_store()
        if volume_id in chunks.images:
            return
        if source_volume_id not in chunks.images:
            raise BackingStoreMissing(
                f"the data of {source_volume_id} is missing from the block store"
            )
        try:
            # As a snapshot: freeze a mounted filesystem, then share every chunk.
            with self.devices.frozen(source_volume_id):
                chunks.flush()
                size = max(size_gib * GIB, chunks.image(source_volume_id).size)
                chunks.create(volume_id, size, source=source_volume_id)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"copy {source_volume_id}") from None

    def restore_whole(self, volume_id: str) -> None:
        pass  # a restore shares the snapshot's chunks: the volume holds all its data at once

    def initialization_bytes(self, volume_id: str, size_gib: int) -> int:
        return len(self._volume_chunks(volume_id)) * CHUNK_SIZE

    def _volume_chunks(self, volume_id: str) -> dict[int, int]:
        try:
            image = self._chunk_store().image(volume_id)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"read {volume_id}") from None
        with image.lock:
            return dict(image.chunks)

    def initialize_volume(
        self, volume_id: str, size_gib: int, position: int, budget: int
    ) -> tuple[int, int]:
        # Initialization reads the chunks the volume maps, in order; unwritten ones are zeros.
        chunks = self._chunk_store()
        indexes = sorted(i for i in self._volume_chunks(volume_id) if i >= position // CHUNK_SIZE)
        visited = 0
        try:
            for index in indexes:
                if visited >= budget:
                    return index * CHUNK_SIZE, visited
                chunks.read(volume_id, index * CHUNK_SIZE, CHUNK_SIZE)
                visited += CHUNK_SIZE
            return max(size_gib * GIB, chunks.image(volume_id).size), visited
        except ChunkStoreError as failure:
            raise self._translate(failure, f"initialize {volume_id}") from None

    # ---- the EBS direct APIs: a block is a chunk -------------------------------------

    def _snapshot_chunks(self, snapshot_id: str) -> dict[int, int]:
        try:
            image = self._chunk_store().image(snapshot_id)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"read {snapshot_id}") from None
        with image.lock:
            return dict(image.chunks)

    def snapshot_blocks(self, snapshot_id: str) -> list[int]:
        return sorted(self._snapshot_chunks(snapshot_id))

    def read_snapshot_block(self, snapshot_id: str, index: int) -> bytes:
        try:
            data = self._chunk_store().read(
                snapshot_id, index * SNAPSHOT_BLOCK_SIZE, SNAPSHOT_BLOCK_SIZE
            )
        except ChunkStoreError as failure:
            raise self._translate(failure, f"read {snapshot_id}") from None
        return data + bytes(SNAPSHOT_BLOCK_SIZE - len(data))

    def changed_blocks(self, first_snapshot_id: str, second_snapshot_id: str) -> list[int]:
        # Shared chunks are unchanged data; a chunk written since is a new chunk id.
        first = self._snapshot_chunks(first_snapshot_id)
        second = self._snapshot_chunks(second_snapshot_id)
        return sorted(i for i in first.keys() | second.keys() if first.get(i) != second.get(i))

    def start_snapshot_data(self, snapshot_id: str, size_gib: int, parent: str | None) -> None:
        chunks = self._chunk_store()
        if snapshot_id in chunks.images:
            return
        try:
            if parent is not None and parent not in chunks.images:
                raise BackingStoreMissing(f"the data of snapshot {parent} is missing")
            chunks.create(_writing(snapshot_id), size_gib * GIB, source=parent)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"start {snapshot_id}") from None

    def write_snapshot_block(self, snapshot_id: str, index: int, data: bytes) -> None:
        try:
            self._chunk_store().write(_writing(snapshot_id), index * SNAPSHOT_BLOCK_SIZE, data)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"write block {index} of {snapshot_id}") from None
        except OSError as failure:
            raise BackendError(f"cannot write {snapshot_id}: {failure}") from None

    def complete_snapshot_data(self, snapshot_id: str) -> None:
        chunks = self._chunk_store()
        writing = _writing(snapshot_id)
        try:
            if snapshot_id not in chunks.images:
                source = chunks.image(writing)
                chunks.flush()
                chunks.create(snapshot_id, source.size, source=writing)
            chunks.delete(writing)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"complete {snapshot_id}") from None

    def archive_snapshot(self, snapshot_id: str) -> None:
        try:
            archive.archive(self._chunk_store(), self.archive_dir, snapshot_id)
        except NoSuchImage:
            if not archive.archive_path(self.archive_dir, snapshot_id).exists():
                raise BackingStoreMissing(f"the data of {snapshot_id} is missing") from None
        except ChunkStoreError as failure:
            raise self._translate(failure, f"archive {snapshot_id}") from None
        except OSError as failure:
            raise BackendError(f"cannot archive {snapshot_id}: {failure}") from None

    def restore_archived_snapshot(self, snapshot_id: str) -> None:
        try:
            archive.restore(self._chunk_store(), self.archive_dir, snapshot_id)
        except ChunkStoreError as failure:
            raise self._translate(failure, f"restore {snapshot_id} from the archive") from None
        except OSError as failure:
            raise BackendError(
                f"cannot restore {snapshot_id} from the archive: {failure}"
            ) from None

    def inventory(self) -> Inventory:
        chunks = self._chunk_store()
        attached = {volume_id: device.path for volume_id, device in self.devices.bound()}
        names = set(chunks.images)
        return Inventory(
            volumes={n for n in names if n.startswith("vol-")},
            snapshots={n for n in names if n.startswith("snap-")}
            | archive.archived(self.archive_dir),
            attached=attached,
            damaged={
                name: f"{count} chunk(s) of its data are missing from the block store; reads "
                "of them fail"
                for name, count in self._lost.items()
                if name in names
            },
        )


def _writing(snapshot_id: str) -> str:
    """The writable image of a snapshot being written through the EBS direct APIs."""
    return f"writing-{snapshot_id}"


assert CHUNK_SIZE == SNAPSHOT_BLOCK_SIZE, "an EBS direct block is one chunk"
