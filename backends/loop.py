"""Linux loop devices through the kernel's ioctls (loop(4)).

`attach` binds a file to a free loop device with LOOP_CONFIGURE, creating one
when all are in use; `detach` releases it; `bound_devices`, `backed_by` and
`bound_under` rediscover what is bound to which file from sysfs, so no record of
our own is needed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

LOOP_MAJOR = 7

LOOP_CLR_FD = 0x4C01
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_REMOVE = 0x4C81
LOOP_CTL_GET_FREE = 0x4C82

LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64

# struct loop_info64: 5 x u64, 4 x u32, file name, crypt name, key, 2 x u64 init.
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: u32 fd, u32 block_size, loop_info64, 8 x u64 reserved.
_LOOP_CONFIG = struct.Struct(f"=II{_LOOP_INFO64.size}s64x")

SYS_BLOCK = Path("/sys/block")
DELETED = " (deleted)"  # what sysfs appends to a backing file unlinked while bound


class LoopError(Exception):
    """A loop-device operation failed; the message says which and why."""


class LoopBusy(LoopError):
    """The device is open exclusively (mounted, or claimed by another user)."""


@dataclass(frozen=True)
class BoundDevice:
    path: str  # /dev/loopN
    number: int
    backing_file: str  # as sysfs shows it, DELETED appended once the file is unlinked
    autoclear: bool

    @property
    def file(self) -> str:
        """The path of the backing file, deleted or not."""
        return self.backing_file.removesuffix(DELETED)


def _device_node(number: int) -> str:
    """The /dev node of loop device `number`, made if devtmpfs has not made it (yet)."""
    path = f"/dev/loop{number}"
    for _ in range(100):
        try:
            if stat.S_ISBLK(os.stat(path).st_mode):
                return path
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    with contextlib.suppress(FileExistsError):
        os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, number))
    return path


def _info(backing_name: str, flags: int) -> bytes:
    name = os.fsencode(backing_name)[: LO_NAME_SIZE - 1]
    return _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0)


def attach(backing_file: Path, *, direct_io: bool = True, attempts: int = 50) -> str:
    """Bind `backing_file` to a free loop device and return its path (/dev/loopN).

    Two attaches can both be handed the same free device by LOOP_CTL_GET_FREE;
    the loser's LOOP_CONFIGURE fails with EBUSY and it asks again.
    """
    flags = LO_FLAGS_DIRECT_IO if direct_io else 0
    backing_fd = os.open(backing_file, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(attempts):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = _device_node(number)
                loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                try:
                    config = _LOOP_CONFIG.pack(backing_fd, 0, _info(str(backing_file), flags))
                    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, config)
                    return device
                except OSError as failure:
                    if failure.errno != errno.EBUSY:
                        raise LoopError(
                            f"cannot bind {backing_file} to {device}: {failure.strerror}"
                        ) from failure
                finally:
                    os.close(loop_fd)
            raise LoopError(f"no free loop device for {backing_file} after {attempts} tries")
        finally:
            os.close(control)
    except OSError as failure:
        raise LoopError(f"cannot bind {backing_file}: {failure.strerror}") from failure
    finally:
        os.close(backing_fd)


def remove(number: int) -> bool:
    """Remove the free loop device `number` from the kernel; False if it is in use or gone."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(control, LOOP_CTL_REMOVE, number)
    except OSError:
        return False
    finally:
        os.close(control)
    return True


def is_busy(device: str) -> bool:
    """Whether the device is claimed exclusively: mounted, or held by another exclusive user."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as failure:
        if failure.errno == errno.EBUSY:
            return True
        raise
    os.close(fd)
    return False


def detach(device: str, *, force: bool = False) -> None:
    """Release a loop device.

    Without `force`, a device that is mounted raises LoopBusy. With `force`, the
    kernel detaches it lazily: it is released once its last user lets go.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(device, flags)
    except FileNotFoundError:
        return
    except OSError as failure:
        if failure.errno == errno.EBUSY:
            raise LoopBusy(f"{device} is in use (mounted?); unmount it first") from failure
        raise LoopError(f"cannot open {device}: {failure.strerror}") from failure
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD)
    except OSError as failure:
        if failure.errno != errno.ENXIO:  # ENXIO: nothing bound, already detached
            raise LoopError(f"cannot detach {device}: {failure.strerror}") from failure
    finally:
        os.close(fd)


def set_capacity(device: str) -> None:
    """Make the device re-read its backing file's size (after the file grew)."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY)
    except OSError as failure:
        raise LoopError(f"cannot resize {device}: {failure.strerror}") from failure
    finally:
        os.close(fd)


def bound_devices() -> list[BoundDevice]:
    """Every loop device that has a backing file, read from sysfs."""
    return _scan(lambda backing: True)


def backed_by(backing_files: Collection[str]) -> list[BoundDevice]:
    """The loop devices bound to any of `backing_files`, as sysfs names them."""
    return _scan(backing_files.__contains__)


def bound_under(directory: Path) -> list[BoundDevice]:
    """The loop devices bound to files under `directory` (deleted files too)."""
    prefix = str(directory).rstrip("/") + "/"
    return _scan(lambda backing: backing.startswith(prefix))


def _scan(wanted: Callable[[str], bool]) -> list[BoundDevice]:
    # Every attach and detach scans all loop devices, so this is plain os calls: with
    # hundreds bound, pathlib's overhead per sysfs read made each scan take milliseconds.
    # A device's other attributes are read only once its backing file is wanted.
    found = []
    for name in os.listdir(SYS_BLOCK):
        if not name.startswith("loop"):
            continue
        try:
            backing = _read_sysfs(f"{SYS_BLOCK}/{name}/loop/backing_file")
            if not wanted(backing):
                continue
            autoclear = _read_sysfs(f"{SYS_BLOCK}/{name}/loop/autoclear") == "1"
        except OSError:
            continue  # not bound, or released meanwhile
        number = int(name.removeprefix("loop"))
        found.append(BoundDevice(f"/dev/{name}", number, backing, autoclear))
    return sorted(found, key=lambda device: device.number)


def _read_sysfs(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096).decode(errors="surrogateescape").strip()
    finally:
        os.close(fd)


def backing_file(device: str) -> str | None:
    """What `device` is bound to now, or None once it is free."""
    try:
        return _read_sysfs(f"{SYS_BLOCK}/{os.path.basename(device)}/loop/backing_file")
    except OSError:
        return None


def size_bytes(device: str) -> int:
    name = os.path.basename(device)
    return int((SYS_BLOCK / name / "size").read_text()) * 512


def direct_io(device: str) -> bool:
    name = os.path.basename(device)
    try:
        return (SYS_BLOCK / name / "loop" / "dio").read_text().strip() == "1"
    except OSError:
        return False
