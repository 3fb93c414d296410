"""What the plugin does to this machine: find, format and mount block devices."""

from __future__ import annotations

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
    if fstype == "ext4":
        _check("mkfs.ext4", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", device)
    else:
        _check("mkfs.xfs", "-q", device)


def is_mount_point(path: Path) -> bool:
    return os.path.ismount(path)


def mount(device: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    _check("mount", device, str(target))


def unmount(target: Path) -> None:
    if is_mount_point(target):
        _check("umount", str(target))
