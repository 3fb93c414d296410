"""The loopdev backend: each volume a sparse image file in the data dir, attached through
the device layer (backends.devices), directly or through the policy layer (layer.py) where
faults or the performance model need it; copy.py copies images at the cost of their data.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from backends import (
    LARGEST_EBS_VOLUME_GIB,
    SNAPSHOT_BLOCK_SIZE,
    BackendError,
    BackingStoreMissing,
    Inventory,
    OutOfSpace,
    ProgressCallback,
    SizeLimit,
)
from backends.devices import LoopDevices
from backends.io_faults import IoFault
from backends.loopdev import lazy
from backends.loopdev.copy import copy_image, data_bytes, data_extents, visit_data
from backends.loopdev.layer import PolicyLayer
from backends.performance import VolumeShape
from fakestor import failpoints
from fakestor.mounts import mount_table

log = logging.getLogger(__name__)

GIB = 1024**3
IMAGE_SUFFIX = ".img"


def _raise_backend_error(failure: OSError, what: str) -> None:
    if failure.errno in (errno.ENOSPC, errno.EDQUOT):
        raise OutOfSpace(f"no space left in the data dir to {what}") from failure
    raise BackendError(f"cannot {what}: {failure.strerror or failure}") from failure


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def largest_file_gib(directory: Path, ceiling: int = LARGEST_EBS_VOLUME_GIB) -> int | None:
    """The largest sparse file (in GiB) the filesystem of `directory` holds, if below `ceiling`.

    Probed with ftruncate on a scratch file, which allocates nothing: ext4 stops
    just short of 16 TiB (EFBIG), xfs and btrfs hold every EBS size.
    """
    probe = directory / ".size-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def fits(gib: int) -> bool:
        try:
            os.ftruncate(fd, gib * GIB)
        except OSError as failure:
            if failure.errno in (errno.EFBIG, errno.EINVAL):
                return False
            raise
        return True

    try:
        if fits(ceiling):
            return None
        low, high = 0, ceiling - 1  # fits(low) holds; the answer is in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            if fits(middle):
                low = middle
            else:
                high = middle - 1
        return low
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on (ext4, xfs, ...), from the mount table."""
    target = str(path.resolve())
    best = ("", "unknown")
    for mount in mount_table():
        inside = target == mount.target or target.startswith(mount.target.rstrip("/") + "/")
        if inside and len(mount.target) >= len(best[0]):
            best = (mount.target, mount.fstype)
    return best[1]


class LoopdevBackend:
    """Volumes as sparse files under the data dir, attached with loop devices.

    Layout under the data dir:

        volumes/<vol-id>.img       a volume's data, created sparse at its full size
        snapshots/<snap-id>.img    a snapshot's data (reflink clone or sparse copy)
        snapshots/<snap-id>.img.writing  a snapshot being written through the EBS direct
                                   APIs, renamed to .img when completed
        *.partial / *.deleting     files mid-create / mid-delete, finished by `inventory`
    """

    name = "loopdev"
    latency = 0.0

    def __init__(
        self, data_dir: Path, dev_dir: Path = Path("/dev"), *, policy: str = "when-needed"
    ) -> None:
        self.volumes_dir = data_dir / "volumes"
        self.snapshots_dir = data_dir / "snapshots"
        self.archive_dir = data_dir / "archive"  # archived snapshots' images
        self.devices = LoopDevices(self.volumes_dir, suffix=IMAGE_SUFFIX, dev_dir=dev_dir)
        self.layer = PolicyLayer(self.volumes_dir, IMAGE_SUFFIX, data_dir / "policy", dev_dir,
                                 always=policy == "always")  # fmt: skip
        self.lazy = lazy.LazyImages(self.volumes_dir, IMAGE_SUFFIX)
        self.layer.lazy = self.lazy
        self._lazy_restores = False  # known at start
        self._size_limit: SizeLimit | None = None

    # ---- lifecycle ----------------------------------------------------------

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise BackendError(
                "the loopdev backend needs root (loop devices and /dev links); run as root "
                "or use --backend metadata"
            )
        if not os.access("/dev/loop-control", os.R_OK | os.W_OK):
            raise BackendError(
                "/dev/loop-control is missing: load the loop module (modprobe loop) or use "
                "--backend metadata"
            )

    def start(self) -> None:
        for directory in (self.volumes_dir, self.snapshots_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._lazy_restores = lazy.wanted(self.volumes_dir)
        self.lazy.start()
        self.layer.start()
        try:
            largest = largest_file_gib(self.volumes_dir)
        except OSError as failure:
            raise BackendError(f"cannot use {self.volumes_dir}: {failure.strerror}") from None
        if largest is not None:
            self._size_limit = SizeLimit(
                largest,
                f"the data dir {self.volumes_dir.parent} is on "
                f"{filesystem_type(self.volumes_dir)}, whose largest file is {largest} GiB; "
                "put the data dir on xfs or btrfs (or use --backend fuse) for volumes up to "
                f"{LARGEST_EBS_VOLUME_GIB} GiB",
            )

    def close(self) -> None:
        self.layer.close()  # image files stay bound; the layer's devices go with it
        self.lazy.close()

    def size_limit(self) -> SizeLimit | None:
        return self._size_limit

    # ---- paths --------------------------------------------------------------

    def volume_image(self, volume_id: str) -> Path:
        return self.devices.file_of(volume_id)

    def snapshot_image(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / f"{snapshot_id}{IMAGE_SUFFIX}"

    # ---- volumes ------------------------------------------------------------

    def create_volume(self, volume_id: str, size_gib: int, snapshot_id: str | None) -> None:
        if snapshot_id is None:
            self._create_blank(volume_id, size_gib)
            return
        image = self.volume_image(volume_id)
        if image.exists():
            return
        partial = image.with_name(image.name + ".partial")
        try:
            source = self.snapshot_image(snapshot_id)
            if not source.exists():
                raise BackingStoreMissing(
                    f"the data of snapshot {snapshot_id} is missing ({source})"
                )
            # Without reflinks, a lazy restore: available now, copied by the pass.
            restored_lazily = self._lazy_restores and self.lazy.prepare(
                source, image, partial, size_gib * GIB
            )
            if not restored_lazily:
                copy_image(source, partial)
                if partial.stat().st_size < size_gib * GIB:
                    os.truncate(partial, size_gib * GIB)
            os.rename(partial, image)
            _fsync_dir(self.volumes_dir)
            if lazy.record_of(image).exists():
                self.lazy.add(volume_id)
        except OSError as failure:
            partial.unlink(missing_ok=True)
            _raise_backend_error(failure, f"create {volume_id}")

    def _create_blank(self, volume_id: str, size_gib: int) -> None:
        """A blank volume's sparse image, made at its own name and durable on return.

        It has no data to hide until it is complete, so there is no partial file to
        rename: one fsync of the file makes its size and (on a journalling filesystem)
        its directory entry durable, and the directory's fsync after it has nothing left
        to write there. A create redone after a crash (the volume still `creating`, so
        never attached) only sets the size again.
        """
        image = self.volume_image(volume_id)
        try:
            fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size_gib * GIB)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.volumes_dir)
        except OSError as failure:
            _raise_backend_error(failure, f"create {volume_id}")

    def materialize(self, volume_id: str) -> None:
        """Finish a lazy restore at full speed, for what needs the image's bytes whole.

        Callers: create_snapshot and copy_volume (they copy the image), volume_file (the
        NBD export to a node serves the image), an attach of a device bound directly
        (the kernel reads the image). Attaches go through the policy layer, which reads
        through the lazy record; a resize grows past the record's range, which it never
        covers; archiving and deleting the source snapshot leave the volume's own link.
        Raises BackendError.
        """
        try:
            self.lazy.materialize(volume_id)
        except OSError as failure:
            _raise_backend_error(failure, f"copy the rest of {volume_id}'s snapshot")

    def delete_volume(self, volume_id: str) -> None:
        self.detach_volume(volume_id, force=True)
        image = self.volume_image(volume_id)
        doomed = image.with_name(image.name + ".deleting")
        with contextlib.suppress(FileNotFoundError):
            os.rename(image, doomed)
        self.lazy.forget(volume_id)
        failpoints.hit("loopdev.delete.renamed")
        doomed.unlink(missing_ok=True)
        image.with_name(image.name + ".partial").unlink(missing_ok=True)
        _fsync_dir(self.volumes_dir)

    def resize_volume(self, volume_id: str, size_gib: int) -> None:
        image = self.volume_image(volume_id)
        try:
            if image.stat().st_size < size_gib * GIB:
                os.truncate(image, size_gib * GIB)
        except FileNotFoundError:
            raise BackingStoreMissing(f"the data of {volume_id} is missing ({image})") from None
        except OSError as failure:
            _raise_backend_error(failure, f"resize {volume_id}")
        self.layer.refresh_size(volume_id)
        self._devices_of(volume_id).set_capacity(volume_id)

    # ---- devices ------------------------------------------------------------

    def _devices_of(self, volume_id: str) -> LoopDevices:
        """The device layer the volume is bound through (the image's if not bound)."""
        return self.layer.devices if self.layer.holds(volume_id) else self.devices

    def attach_volume(self, volume_id: str, device_name: str) -> str | None:
        # A device already bound keeps its path (a relink); else the layer when needed,
        # and always while the volume's restore is lazy (the layer reads the snapshot).
        restoring = volume_id in self.lazy
        if restoring and self.devices.bound_to(volume_id):
            self.materialize(volume_id)
            restoring = False
        if not self.layer.holds(volume_id) and (
            self.devices.bound_to(volume_id) or not (restoring or self.layer.wanted(volume_id))
        ):
            return self.devices.attach(volume_id, device_name)
        if not self.volume_image(volume_id).exists():
            raise BackingStoreMissing(
                f"the data of {volume_id} is missing ({self.volume_image(volume_id)})"
            )
        return self.layer.attach(volume_id, device_name)

    def set_performance(
        self, volume_id: str, shape: VolumeShape | None, credit_scale: float = 1.0
    ) -> bool:
        self.layer.set_performance(volume_id, shape, credit_scale)
        # Attached directly, the model applies from the next attach (through the layer).
        return shape is None or not self.devices.bound_to(volume_id)

    def burst_balance(self, volume_id: str) -> float | None:
        return self.layer.burst_balance(volume_id)

    def detach_volume(self, volume_id: str, force: bool) -> None:
        if self.layer.holds(volume_id):
            self.layer.detach(volume_id, force)
        else:
            self.devices.detach(volume_id, force)

    def volume_file(self, volume_id: str) -> Path | None:
        try:
            self.materialize(volume_id)
        except BackendError as failure:
            log.error("%s", failure)
            return None
        image = self.volume_image(volume_id)
        return image if image.exists() else None

    def set_io_fault(self, volume_id: str, fault: IoFault | None) -> bool:
        self.layer.set_io_fault(volume_id, fault)
        # Attached directly, the fault applies from the next attach (through the layer).
        return fault is None or not self.devices.bound_to(volume_id)

    # ---- snapshots ----------------------------------------------------------

    def _copy(
        self,
        source: Path,
        target: Path,
        progress: ProgressCallback,
        what: str,
        *,
        freezing: str | None = None,
    ) -> None:
        """Copy `source` to `target` through a .partial file, the volume `freezing` frozen."""
        if target.exists():
            return
        partial = target.with_name(target.name + ".partial")
        try:
            devices = self._devices_of(freezing) if freezing else None
            with devices.frozen(freezing) if devices and freezing else contextlib.nullcontext():
                method = copy_image(source, partial, progress)
            os.rename(partial, target)
            _fsync_dir(target.parent)
            log.info("%s: %s of %s", what, method, source.name)
        except OSError as failure:
            partial.unlink(missing_ok=True)
            _raise_backend_error(failure, what)

    def create_snapshot(self, snapshot_id: str, volume_id: str, progress: ProgressCallback) -> None:
        source = self.volume_image(volume_id)
        if not source.exists():
            raise BackingStoreMissing(f"the data of {volume_id} is missing ({source})")
        self.materialize(volume_id)
        self._copy(
            source,
            self.snapshot_image(snapshot_id),
            progress,
            f"snapshot {volume_id} as {snapshot_id}",
            freezing=volume_id,
        )

    def copy_snapshot(
        self, source_snapshot_id: str, snapshot_id: str, progress: ProgressCallback
    ) -> None:
        source = self.snapshot_image(source_snapshot_id)
        if not source.exists():
            raise BackingStoreMissing(
                f"the data of snapshot {source_snapshot_id} is missing ({source})"
            )
        self._copy(
            source, self.snapshot_image(snapshot_id), progress,
            f"copy {source_snapshot_id} to {snapshot_id}",
        )  # fmt: skip

    def delete_snapshot(self, snapshot_id: str) -> None:
        image = self.snapshot_image(snapshot_id)
        image.unlink(missing_ok=True)
        self._writing(snapshot_id).unlink(missing_ok=True)
        image.with_name(image.name + ".partial").unlink(missing_ok=True)
        (self.archive_dir / image.name).unlink(missing_ok=True)
        _fsync_dir(self.snapshots_dir)

    def archive_snapshot(self, snapshot_id: str) -> None:
        # A loopdev snapshot is a full image already: archiving moves it out of reach.
        image = self.snapshot_image(snapshot_id)
        archived = self.archive_dir / image.name
        if archived.exists():
            return
        if not image.exists():
            raise BackingStoreMissing(f"the data of {snapshot_id} is missing ({image})")
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        os.replace(image, archived)
        _fsync_dir(self.archive_dir)
        _fsync_dir(self.snapshots_dir)

    def restore_archived_snapshot(self, snapshot_id: str) -> None:
        image = self.snapshot_image(snapshot_id)
        archived = self.archive_dir / image.name
        if not archived.exists():
            return
        os.replace(archived, image)
        _fsync_dir(self.snapshots_dir)
        _fsync_dir(self.archive_dir)

    # ---- volume copies and initialization --------------------------------------------

    def copy_volume(self, source_volume_id: str, volume_id: str, size_gib: int) -> None:
        source = self.volume_image(source_volume_id)
        if not source.exists():
            raise BackingStoreMissing(f"the data of {source_volume_id} is missing ({source})")
        self.materialize(source_volume_id)
        target = self.volume_image(volume_id)
        self._copy(
            source, target, lambda _: None, f"copy {source_volume_id} to {volume_id}",
            freezing=source_volume_id,
        )  # fmt: skip
        try:
            if target.stat().st_size < size_gib * GIB:
                os.truncate(target, size_gib * GIB)
        except OSError as failure:
            _raise_backend_error(failure, f"grow {volume_id}")

    def _existing_volume(self, volume_id: str) -> Path:
        image = self.volume_image(volume_id)
        if not image.exists():
            raise BackingStoreMissing(f"the data of {volume_id} is missing ({image})")
        return image

    def restore_whole(self, volume_id: str) -> None:
        if volume_id in self.lazy:
            self.materialize(volume_id)

    def initialization_bytes(self, volume_id: str, size_gib: int) -> int:
        restoring = self.lazy.get(volume_id)
        try:
            if restoring is not None:
                return restoring.uncopied_bytes()
            return data_bytes(self._existing_volume(volume_id))
        except OSError as failure:
            raise BackendError(f"cannot read {volume_id}: {failure}") from None

    def initialize_volume(
        self, volume_id: str, size_gib: int, position: int, budget: int
    ) -> tuple[int, int]:
        try:
            if self.lazy.restored_lazily(volume_id):  # the pass copies its blocks
                return self.lazy.copy_from(volume_id, position, budget, size_gib * GIB)
            return visit_data(self._existing_volume(volume_id), position, budget)
        except OSError as failure:
            raise BackendError(f"cannot initialize {volume_id}: {failure}") from None

    # ---- the EBS direct APIs ------------------------------------------------------

    def _writing(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / f"{snapshot_id}{IMAGE_SUFFIX}.writing"

    def _existing_image(self, snapshot_id: str) -> Path:
        image = self.snapshot_image(snapshot_id)
        if not image.exists():
            raise BackingStoreMissing(f"the data of snapshot {snapshot_id} is missing ({image})")
        return image

    def _allocated_blocks(self, image: Path) -> set[int]:
        """Blocks holding an allocated extent, found with SEEK_DATA/SEEK_HOLE."""
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            blocks: set[int] = set()
            for offset, length in data_extents(fd):
                first = offset // SNAPSHOT_BLOCK_SIZE
                last = (offset + length - 1) // SNAPSHOT_BLOCK_SIZE
                blocks.update(range(first, last + 1))
            return blocks
        finally:
            os.close(fd)

    def _read_block(self, image: Path, index: int) -> bytes:
        with image.open("rb") as data:
            data.seek(index * SNAPSHOT_BLOCK_SIZE)
            block = data.read(SNAPSHOT_BLOCK_SIZE)
        return block + bytes(SNAPSHOT_BLOCK_SIZE - len(block))

    def snapshot_blocks(self, snapshot_id: str) -> list[int]:
        try:
            return sorted(self._allocated_blocks(self._existing_image(snapshot_id)))
        except OSError as failure:
            raise BackendError(f"cannot list the blocks of {snapshot_id}: {failure}") from None

    def read_snapshot_block(self, snapshot_id: str, index: int) -> bytes:
        try:
            return self._read_block(self._existing_image(snapshot_id), index)
        except OSError as failure:
            raise BackendError(f"cannot read {snapshot_id}: {failure}") from None

    def changed_blocks(self, first_snapshot_id: str, second_snapshot_id: str) -> list[int]:
        first = self._existing_image(first_snapshot_id)
        second = self._existing_image(second_snapshot_id)
        try:
            in_first = self._allocated_blocks(first)
            in_second = self._allocated_blocks(second)
            # Allocated in one only: changed. Allocated in both: changed if the bytes differ.
            changed = in_first ^ in_second
            changed.update(
                index
                for index in in_first & in_second
                if self._read_block(first, index) != self._read_block(second, index)
            )
            return sorted(changed)
        except OSError as failure:
            raise BackendError(f"cannot compare {first_snapshot_id} and "
                               f"{second_snapshot_id}: {failure}") from None  # fmt: skip

    def start_snapshot_data(self, snapshot_id: str, size_gib: int, parent: str | None) -> None:
        writing = self._writing(snapshot_id)
        if writing.exists() or self.snapshot_image(snapshot_id).exists():
            return
        partial = self.snapshot_image(snapshot_id).with_name(f"{snapshot_id}.writing.partial")
        try:
            if parent is not None:
                copy_image(self._existing_image(parent), partial)
            else:
                partial.touch(0o600)
            if partial.stat().st_size < size_gib * GIB:
                os.truncate(partial, size_gib * GIB)
            os.rename(partial, writing)
            _fsync_dir(self.snapshots_dir)
        except OSError as failure:
            partial.unlink(missing_ok=True)
            _raise_backend_error(failure, f"start {snapshot_id}")

    def write_snapshot_block(self, snapshot_id: str, index: int, data: bytes) -> None:
        writing = self._writing(snapshot_id)
        try:
            fd = os.open(writing, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackingStoreMissing(f"{snapshot_id} is not being written ({writing})") from None
        try:
            os.pwrite(fd, data, index * SNAPSHOT_BLOCK_SIZE)
        except OSError as failure:
            _raise_backend_error(failure, f"write block {index} of {snapshot_id}")
        finally:
            os.close(fd)

    def complete_snapshot_data(self, snapshot_id: str) -> None:
        writing = self._writing(snapshot_id)
        if self.snapshot_image(snapshot_id).exists() and not writing.exists():
            return
        try:
            fd = os.open(writing, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(writing, self.snapshot_image(snapshot_id))
            _fsync_dir(self.snapshots_dir)
        except FileNotFoundError:
            raise BackingStoreMissing(f"{snapshot_id} is not being written ({writing})") from None
        except OSError as failure:
            _raise_backend_error(failure, f"complete {snapshot_id}")

    # ---- reconcile ----------------------------------------------------------

    def inventory(self) -> Inventory:
        """What exists on the machine; also finishes interrupted deletes and creates."""
        for directory in (self.volumes_dir, self.snapshots_dir):
            for leftover in [*directory.glob("*.deleting"), *directory.glob("*.partial")]:
                log.info("removing interrupted %s", leftover)
                leftover.unlink(missing_ok=True)
        volumes = {path.stem for path in self.volumes_dir.glob(f"*{IMAGE_SUFFIX}")}
        snapshots = {path.stem for path in self.snapshots_dir.glob(f"*{IMAGE_SUFFIX}")}
        snapshots |= {path.stem for path in self.archive_dir.glob(f"*{IMAGE_SUFFIX}")}
        attached = {volume_id: device.path for volume_id, device in self.devices.bound()}
        attached |= {volume_id: device.path for volume_id, device in self.layer.devices.bound()}
        return Inventory(volumes=volumes, snapshots=snapshots, attached=attached)
