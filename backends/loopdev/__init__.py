"""The loopdev backend: a volume is a sparse image file, attached as a loop device.

Layout under the data dir:

    volumes/<vol-id>.img       a volume's data, created sparse at its full size
    snapshots/<snap-id>.img    a snapshot's data (reflink clone or sparse copy)
    *.partial / *.deleting     files mid-create / mid-delete, finished by `inventory`

An attached volume appears as /dev/loopN, linked from
/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex> as udev links it on a
Nitro instance, and from /dev/fakestor/<device name> (sdf and xvdf alike).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backends import (
    LARGEST_EBS_VOLUME_GIB,
    BackendError,
    BackingStoreMissing,
    DeviceBusy,
    Inventory,
    NoFreeDevice,
    OutOfSpace,
    ProgressCallback,
    SizeLimit,
    loop,
)
from backends.loopdev.copy import copy_image
from fakestor import failpoints
from fakestor.device_names import by_id_name, device_aliases
from fakestor.mounts import mount_points, mount_table

log = logging.getLogger(__name__)

GIB = 1024**3
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
RELEASE_TIMEOUT = 10.0


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


@contextlib.contextmanager
def frozen(device: str | None) -> Iterator[None]:
    """Freeze the filesystem on `device` (if mounted here) for a consistent copy.

    FIFREEZE flushes the filesystem and blocks writers until FITHAW, so the image
    copied meanwhile is a consistent point in time.
    """
    points = mount_points(device) if device else []
    fd = None
    for point in points:
        try:
            fd = os.open(point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.ioctl(fd, FIFREEZE, 0)
            break
        except OSError as failure:
            log.warning("cannot freeze %s on %s: %s", device, point, failure.strerror)
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        if fd is None and device:
            # Not mounted here (or cannot freeze): flush what has been written.
            with contextlib.suppress(OSError):
                device_fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(device_fd)
                finally:
                    os.close(device_fd)
        yield
    finally:
        if fd is not None:
            try:
                fcntl.ioctl(fd, FITHAW, 0)
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
    """Volumes as sparse files under the data dir, attached with loop devices."""

    name = "loopdev"
    latency = 0.0

    def __init__(self, data_dir: Path, dev_dir: Path = Path("/dev")) -> None:
        self.volumes_dir = data_dir / "volumes"
        self.snapshots_dir = data_dir / "snapshots"
        self.by_id_dir = dev_dir / "disk" / "by-id"
        self.alias_dir = dev_dir / "fakestor"
        # Serialises attach and detach so two requests never bind one image twice.
        self._devices_lock = threading.Lock()
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
        pass

    def size_limit(self) -> SizeLimit | None:
        return self._size_limit

    # ---- paths --------------------------------------------------------------

    def volume_image(self, volume_id: str) -> Path:
        return self.volumes_dir / f"{volume_id}.img"

    def snapshot_image(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / f"{snapshot_id}.img"

    def _bound(self, volume_id: str) -> list[loop.BoundDevice]:
        image = str(self.volume_image(volume_id))
        # A backing file deleted while bound reads back as "<path> (deleted)".
        return loop.backed_by({image, f"{image} (deleted)"})

    # ---- volumes ------------------------------------------------------------

    def create_volume(self, volume_id: str, size_gib: int, snapshot_id: str | None) -> None:
        image = self.volume_image(volume_id)
        if image.exists():
            return
        partial = image.with_name(image.name + ".partial")
        try:
            if snapshot_id is not None:
                source = self.snapshot_image(snapshot_id)
                if not source.exists():
                    raise BackingStoreMissing(
                        f"the data of snapshot {snapshot_id} is missing ({source})"
                    )
                copy_image(source, partial)
                if partial.stat().st_size < size_gib * GIB:
                    os.truncate(partial, size_gib * GIB)
            else:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    os.ftruncate(fd, size_gib * GIB)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(partial, image)
            _fsync_dir(self.volumes_dir)
        except OSError as failure:
            partial.unlink(missing_ok=True)
            _raise_backend_error(failure, f"create {volume_id}")

    def delete_volume(self, volume_id: str) -> None:
        self.detach_volume(volume_id, force=True)
        image = self.volume_image(volume_id)
        doomed = image.with_name(image.name + ".deleting")
        with contextlib.suppress(FileNotFoundError):
            os.rename(image, doomed)
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
        for device in self._bound(volume_id):
            loop.set_capacity(device.path)

    # ---- attach -------------------------------------------------------------

    def attach_volume(self, volume_id: str, device_name: str) -> str | None:
        image = self.volume_image(volume_id)
        if not image.exists():
            raise BackingStoreMissing(f"the data of {volume_id} is missing ({image})")
        with self._devices_lock:
            bound = self._bound(volume_id)
            if bound:
                device = bound[0].path
            else:
                try:
                    device = loop.attach(image)
                except loop.LoopError as failure:
                    raise NoFreeDevice(str(failure)) from failure
            failpoints.hit("loopdev.attach.bound")
            self._wait_usable(device, image)
            self._link(volume_id, device_name, device)
        return device

    def _wait_usable(self, device: str, image: Path, timeout: float = 10.0) -> None:
        """Wait until the device has the image's size and opens (udev-less machines too)."""
        deadline = time.monotonic() + timeout
        want = image.stat().st_size
        while True:
            try:
                if loop.size_bytes(device) == want:
                    os.close(os.open(device, os.O_RDONLY | os.O_CLOEXEC))
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NoFreeDevice(f"{device} did not become usable within {timeout:.0f}s")
            time.sleep(0.01)

    def _replace_link(self, link: Path, target: str) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f".{link.name}.new")
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        os.rename(temporary, link)

    def _link(self, volume_id: str, device_name: str, device: str) -> None:
        self._replace_link(self.by_id_dir / by_id_name(volume_id), device)
        for alias in device_aliases(device_name):
            self._replace_link(self.alias_dir / alias, device)

    def _unlink(self, volume_id: str, device_paths: set[str]) -> None:
        (self.by_id_dir / by_id_name(volume_id)).unlink(missing_ok=True)
        if self.alias_dir.is_dir():
            for alias in self.alias_dir.iterdir():
                if alias.is_symlink() and os.readlink(alias) in device_paths:
                    alias.unlink(missing_ok=True)
        for directory in (self.alias_dir, self.by_id_dir, self.by_id_dir.parent):
            # Only directories fakestor made and left empty; udev's are never empty.
            with contextlib.suppress(OSError):
                directory.rmdir()

    def detach_volume(self, volume_id: str, force: bool) -> None:
        with self._devices_lock:
            bound = self._bound(volume_id)
            devices = {device.path for device in bound}
            if not force:
                for device in bound:
                    if loop.is_busy(device.path):
                        raise DeviceBusy(
                            f"{device.path} ({volume_id}) is mounted or in use; unmount it, or "
                            "detach with Force"
                        )
            for device in bound:
                try:
                    loop.detach(device.path, force=force)
                except loop.LoopBusy as failure:
                    raise DeviceBusy(str(failure)) from failure
                except loop.LoopError as failure:
                    raise BackendError(str(failure)) from failure
            self._unlink(volume_id, devices | self._stale_link_targets(volume_id))
            if not force:
                self._wait_released(volume_id, bound)

    def _stale_link_targets(self, volume_id: str) -> set[str]:
        link = self.by_id_dir / by_id_name(volume_id)
        try:
            return {os.readlink(link)}
        except OSError:
            return set()

    def _wait_released(self, volume_id: str, bound: list[loop.BoundDevice]) -> None:
        """Wait until none of the devices just detached is bound to the volume any more."""
        deadline = time.monotonic() + RELEASE_TIMEOUT
        while any(loop.backing_file(device.path) == device.backing_file for device in bound):
            if time.monotonic() > deadline:
                raise DeviceBusy(f"the loop device of {volume_id} was not released in time")
            time.sleep(0.01)

    # ---- snapshots ----------------------------------------------------------

    def _copy(
        self, source: Path, target: Path, device: str | None, progress: ProgressCallback, what: str
    ) -> None:
        if target.exists():
            return
        partial = target.with_name(target.name + ".partial")
        try:
            with frozen(device):
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
        bound = self._bound(volume_id)
        self._copy(
            source,
            self.snapshot_image(snapshot_id),
            bound[0].path if bound else None,
            progress,
            f"snapshot {volume_id} as {snapshot_id}",
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
            source, self.snapshot_image(snapshot_id), None, progress,
            f"copy {source_snapshot_id} to {snapshot_id}",
        )  # fmt: skip

    def delete_snapshot(self, snapshot_id: str) -> None:
        image = self.snapshot_image(snapshot_id)
        image.unlink(missing_ok=True)
        image.with_name(image.name + ".partial").unlink(missing_ok=True)
        _fsync_dir(self.snapshots_dir)

    # ---- reconcile ----------------------------------------------------------

    def inventory(self) -> Inventory:
        """What exists on the machine; also finishes interrupted deletes and creates."""
        for directory in (self.volumes_dir, self.snapshots_dir):
            for leftover in [*directory.glob("*.deleting"), *directory.glob("*.partial")]:
                log.info("removing interrupted %s", leftover)
                leftover.unlink(missing_ok=True)
        volumes = {path.stem for path in self.volumes_dir.glob("*.img")}
        snapshots = {path.stem for path in self.snapshots_dir.glob("*.img")}
        prefix = str(self.volumes_dir) + "/"
        attached: dict[str, str] = {}
        for device in loop.bound_devices():
            backing = device.backing_file.removesuffix(" (deleted)")
            if backing.startswith(prefix) and backing.endswith(".img"):
                attached[backing.removeprefix(prefix).removesuffix(".img")] = device.path
        return Inventory(volumes=volumes, snapshots=snapshots, attached=attached)
