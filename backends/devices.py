"""The device layer both real backends hold: volume files bound to loop devices and linked
as EBS names them (by-id, sdf/xvdf); what is bound is found again from sysfs, never recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from backends import BackendError, BackingStoreMissing, DeviceBusy, NoFreeDevice, loop
from fakestor import failpoints
from fakestor.device_names import by_id_path, device_aliases
from fakestor.mounts import mount_points

log = logging.getLogger(__name__)

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
USABLE_TIMEOUT = 10.0
RELEASE_TIMEOUT = 10.0
# The kernel usually has a device ready (or released) within a millisecond: re-check
# soon, then back off to this.
LONGEST_RECHECK = 0.01


class LoopDevices:
    """The loop devices of the volume files in `directory`, and the /dev links to them.

    A volume's file is `directory/<volume id><suffix>`. Its device appears as
    /dev/loopN, linked from <dev_dir>/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex>
    and from <dev_dir>/fakestor/<device name> (sdf and xvdf alike).
    """

    def __init__(self, directory: Path, *, suffix: str = "", dev_dir: Path = Path("/dev")) -> None:
        self.directory = directory
        self.suffix = suffix
        self.by_id_dir = dev_dir / "disk" / "by-id"
        self.alias_dir = dev_dir / "fakestor"
        # Serialises attach and detach so two requests never bind one file twice.
        self._lock = threading.Lock()

    def file_of(self, volume_id: str) -> Path:
        """The file the volume's device is bound to."""
        return self.directory / f"{volume_id}{self.suffix}"

    # ---- what is bound ------------------------------------------------------

    def bound(self) -> list[tuple[str, loop.BoundDevice]]:
        """(volume id, device) for every loop device bound to a volume file here."""
        prefix = f"{self.directory}/"
        found = []
        for device in loop.bound_under(self.directory):
            name = device.file.removeprefix(prefix)
            if name.endswith(self.suffix):
                found.append((name.removesuffix(self.suffix), device))
        return found

    def bound_to(self, volume_id: str) -> list[loop.BoundDevice]:
        """The loop devices bound to the volume's file (deleted meanwhile or not)."""
        file = str(self.file_of(volume_id))
        return loop.backed_by({file, file + loop.DELETED})

    # ---- attach -------------------------------------------------------------

    def attach(self, volume_id: str, device_name: str) -> str:
        """Bind the volume's file to a loop device with direct I/O, link it; return its path.

        A file already bound keeps its device; returns once the device has the file's
        size and opens. Raises BackingStoreMissing (no file), NoFreeDevice.
        """
        file = self.file_of(volume_id)
        if not file.exists():
            raise BackingStoreMissing(f"the data of {volume_id} is missing ({file})")
        with self._lock:
            bound = self.bound_to(volume_id)
            if bound:
                device = bound[0].path
            else:
                try:
                    device = loop.attach(file)
                except loop.LoopError as failure:
                    raise NoFreeDevice(str(failure)) from failure
            # Bound, not yet recorded: where crash tests kill the server (either backend).
            failpoints.hit("loopdev.attach.bound")
            self._wait_usable(device, file)
            self._link(volume_id, device_name, device)
        return device

    def _wait_usable(self, device: str, file: Path, timeout: float = USABLE_TIMEOUT) -> None:
        """Wait until the device has the file's size and opens (udev-less machines too)."""
        deadline = time.monotonic() + timeout
        want = file.stat().st_size
        delay = 0.0005
        while True:
            try:
                if loop.size_bytes(device) == want:
                    os.close(os.open(device, os.O_RDONLY | os.O_CLOEXEC))
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NoFreeDevice(f"{device} did not become usable within {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_RECHECK)

    def _link(self, volume_id: str, device_name: str, device: str) -> None:
        _replace_link(by_id_path(volume_id, self.by_id_dir), device)
        for alias in device_aliases(device_name):
            _replace_link(self.alias_dir / alias, device)

    # ---- detach -------------------------------------------------------------

    def detach(self, volume_id: str, force: bool) -> None:
        """Release the volume's devices and remove their links; not bound is not an error.

        Without `force`, waits until the kernel has let go of them. Raises DeviceBusy
        (mounted or in use and not `force`, or not released in time), BackendError.
        """
        with self._lock:
            bound = self.bound_to(volume_id)
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

    def release_all(self, why: str) -> None:
        """Force every device bound to a volume file here off it and remove its links.

        For files that are about to vanish (or have vanished) with the process serving
        them; a device that cannot be released is logged, not raised.
        """
        with self._lock:
            for volume_id, device in self.bound():
                log.warning("releasing %s (%s) %s", device.path, volume_id, why)
                try:
                    loop.detach(device.path, force=True)
                except loop.LoopError as failure:
                    log.warning("cannot release %s: %s", device.path, failure)
                self._unlink(volume_id, {device.path})

    def _unlink(self, volume_id: str, device_paths: set[str]) -> None:
        by_id_path(volume_id, self.by_id_dir).unlink(missing_ok=True)
        # Every detach looks at every alias: plain os calls, not pathlib's, for hundreds.
        with contextlib.suppress(FileNotFoundError), os.scandir(self.alias_dir) as aliases:
            for alias in aliases:
                with contextlib.suppress(OSError):  # not a link, or removed meanwhile
                    if os.readlink(alias.path) in device_paths:
                        os.unlink(alias.path)
        for directory in (self.alias_dir, self.by_id_dir, self.by_id_dir.parent):
            # Only directories fakestor made and left empty; udev's are never empty.
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _stale_link_targets(self, volume_id: str) -> set[str]:
        link = by_id_path(volume_id, self.by_id_dir)
        try:
            return {os.readlink(link)}
        except OSError:
            return set()

    def _wait_released(self, volume_id: str, bound: list[loop.BoundDevice]) -> None:
        """Wait until none of the devices just detached is bound to the volume any more."""
        deadline = time.monotonic() + RELEASE_TIMEOUT
        delay = 0.0005
        while any(loop.backing_file(device.path) == device.backing_file for device in bound):
            if time.monotonic() > deadline:
                raise DeviceBusy(f"the loop device of {volume_id} was not released in time")
            time.sleep(delay)
            delay = min(delay * 2, LONGEST_RECHECK)

    # ---- while attached -----------------------------------------------------

    def set_capacity(self, volume_id: str) -> None:
        """Make the volume's devices take on its file's new size. Raises BackendError."""
        for device in self.bound_to(volume_id):
            try:
                loop.set_capacity(device.path)
            except loop.LoopError as failure:
                raise BackendError(str(failure)) from failure

    @contextlib.contextmanager
    def frozen(self, volume_id: str) -> Iterator[None]:
        """Hold the volume's filesystem at one point in time while its data is copied.

        FIFREEZE flushes a filesystem mounted from the device and blocks its writers
        until FITHAW. A device mounted nowhere here (or that cannot be frozen) is only
        flushed; a volume without a device needs nothing.
        """
        bound = self.bound_to(volume_id)
        device = bound[0].path if bound else None
        fd = None
        for point in mount_points(device) if device else []:
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


def _replace_link(link: Path, target: str) -> None:
    """Point `link` at `target` in one step (a new link renamed over the old one)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.new")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.rename(temporary, link)
