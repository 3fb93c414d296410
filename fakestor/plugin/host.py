"""What the plugin does to this machine: find, format and mount block devices."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

from fakestor.device_names import by_id_path, device_aliases

FILESYSTEMS = ("ext4", "xfs")


class HostError(Exception):
    """A command on this machine failed; the message carries its own words."""


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _check(*command: str) -> None:
    result = _run(*command)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise HostError(
            f"{' '.join(command)} failed: {detail[-1] if detail else result.returncode}"
        )


def find_device(volume_id: str, device_name: str, timeout: float = 30.0) -> str:
    """The block device of an attached EBS volume, found as on EC2.

    Nitro instances name NVMe devices by volume id under /dev/disk/by-id; Xen
    instances show /dev/sdf as /dev/xvdf. fakestor makes the Nitro link.
    """
    short = device_name.removeprefix("/dev/")
    candidates = [
        by_id_path(volume_id),
        *(Path("/dev") / alias for alias in reversed(device_aliases(short))),
    ]
    deadline = time.monotonic() + timeout
    while True:
        for candidate in candidates:
            if candidate.exists():
                return os.path.realpath(candidate)
        if time.monotonic() > deadline:
            raise HostError(
                f"{volume_id} is attached but no device appeared at "
                f"{', '.join(map(str, candidates))} within {timeout:.0f}s"
            )
        time.sleep(0.05)


def filesystem_of(device: str) -> str | None:
    """The filesystem type blkid finds on the device, or None if it is blank."""
    result = _run("blkid", "-p", "-o", "value", "-s", "TYPE", device)
    if result.returncode == 2:  # no filesystem signature: blank
        return None
    if result.returncode != 0:
        raise HostError(f"blkid cannot read {device}: {result.stderr.strip()}")
    return result.stdout.strip() or None


def make_filesystem(device: str, fstype: str) -> None:
    if fstype not in FILESYSTEMS:
        raise HostError(f"cannot format as {fstype}; choose one of {', '.join(FILESYSTEMS)}")
    # A blank EBS volume reads as zeros: discarding it first is work for nothing.
    if fstype == "ext4":
        _check("mkfs.ext4", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", device)
    else:
        _check("mkfs.xfs", "-q", "-K", device)


def device_bytes(device: str) -> int:
    result = _run("blockdev", "--getsize64", device)
    if result.returncode != 0:
        raise HostError(f"blockdev cannot read the size of {device}: {result.stderr.strip()}")
    return int(result.stdout)


def _ext4_bytes(device: str) -> int:
    result = _run("dumpe2fs", "-h", device)
    if result.returncode != 0:
        raise HostError(f"dumpe2fs cannot read {device}: {result.stderr.strip()}")
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def grow_unmounted(device: str, fstype: str) -> tuple[int, int] | None:
    """Grow an ext4 filesystem to its device before it is mounted; (old, new) bytes if grown.

    EBS leaves growing the filesystem after ModifyVolume (or a restore to a larger
    size) to the instance. ext4 is grown offline: an online resize2fs needs
    CAP_SYS_RESOURCE, which a plugin may lack. xfs grows only online (grow_mounted).
    """
    if fstype != "ext4":
        return None
    size, capacity = _ext4_bytes(device), device_bytes(device)
    if capacity - size < 1024 * 1024:  # ext4 rounds to its block groups
        return None
    # resize2fs refuses a filesystem not checked since its last mount.
    result = _run("e2fsck", "-f", "-p", device)
    if result.returncode >= 4:  # 1 and 2 mean errors were corrected
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise HostError(f"e2fsck {device} found errors it cannot fix: {detail[-1:]}")
    _check("resize2fs", device)
    return size, _ext4_bytes(device)


def grow_mounted(device: str, target: Path, fstype: str) -> tuple[int, int] | None:
    """Grow a mounted xfs filesystem to its device; (old, new) bytes if grown."""
    if fstype != "xfs":
        return None
    before = os.statvfs(target)
    capacity = device_bytes(device)
    if capacity - before.f_blocks * before.f_frsize < 64 * 1024 * 1024:  # log and metadata
        return None
    _check("xfs_growfs", str(target))
    after = os.statvfs(target)
    if after.f_blocks == before.f_blocks:
        return None
    return before.f_blocks * before.f_frsize, after.f_blocks * after.f_frsize


def is_mount_point(path: Path) -> bool:
    return os.path.ismount(path)


_libc = ctypes.CDLL(None, use_errno=True)


def mount(device: str, target: Path, fstype: str) -> None:
    """mount(2) directly: the same call mount(8) makes, without its few ms of exec."""
    target.mkdir(parents=True, exist_ok=True)
    if _libc.mount(device.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        failure = ctypes.get_errno()
        raise HostError(f"mount {device} ({fstype}) on {target} failed: {os.strerror(failure)}")


def unmount(target: Path) -> None:
    """umount2(2) directly; EBUSY (a process uses the filesystem) is an error."""
    if is_mount_point(target) and _libc.umount2(str(target).encode(), 0) != 0:
        failure = ctypes.get_errno()
        raise HostError(f"umount {target} failed: {os.strerror(failure)}")
