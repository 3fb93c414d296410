"""A node's block devices for its attachments: an NBD export made a device, with the same
by-id and alias links a Nitro instance has; kernel NBD where the kernel has it, else nbdfuse
plus a loop device. What is up is written to the state dir, so a restarted agent adopts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backends import loop
from fakestor.device_names import by_id_path, device_aliases
from fakestor.mounts import is_mounted

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class NodeDeviceError(Exception):
    """A device could not be brought up or released; the message says why."""


@dataclass
class LocalDevice:
    """One attachment's device on this node and what holds it up."""

    volume_id: str
    device_name: str  # as attached: /dev/sdf
    device: str  # /dev/loopN or /dev/nbdN
    pid: int  # nbdfuse, or the local nbdkit proxy of the kernel client
    export_name: str  # the export it reads, to tell a new export from the same one
    kernel_nbd: bool = False


def proxy_args(export: dict[str, Any], psk_file: Path, reconnect_seconds: int) -> list[str]:
    """nbdkit's arguments to be the client of the server's export (over TLS-PSK if the
    export asks for it); the retry filter reconnects for `reconnect_seconds` (a server
    restart), then I/O fails (a closed export)."""
    tls = ["tls=require", f"tls-psk={psk_file}", f"tls-username={export['psk_identity']}"]
    return [
        "--filter=retry", "nbd",
        f"hostname={export['host']}", f"port={export['port']}", f"export={export['name']}",
        *(tls if export.get("tls") else []),
        f"retries={max(reconnect_seconds, 1)}", "retry-delay=1", "retry-exponential=no",
    ]  # fmt: skip


def _alive(pid: int, marker: str) -> bool:
    """Whether `pid` runs a command line holding `marker` (not a reused pid)."""
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _replace_link(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.new")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.rename(temporary, link)


class NodeDevices:
    """The devices of this node's attachments, by volume id.

    Each attachment has a directory `state_dir/attachments/<vol-id>/` holding its key
    (0600), the FUSE mount point of nbdfuse, its log and `device.json`.
    """

    def __init__(self, state_dir: Path, dev_root: Path, reconnect_seconds: int = 5) -> None:
        self.directory = state_dir / "attachments"
        self.by_id_dir = dev_root / "disk" / "by-id"
        self.alias_dir = dev_root / "fakestor"
        self.reconnect_seconds = reconnect_seconds
        # The kernel's NBD client where the kernel has one; this path cannot be tested on
        # machines without the nbd module (such as fakestor's CI), nbdfuse's can.
        self.kernel_nbd = Path("/dev/nbd0").exists()
        self.devices: dict[str, LocalDevice] = {}

    # ---- adopt what a previous agent left ---------------------------------------------

    def adopt(self) -> None:
        """Keep the devices a previous agent left up and whole; release the rest."""
        if not self.directory.is_dir():
            return
        for work in sorted(self.directory.iterdir()):
            try:
                found = LocalDevice(**json.loads((work / "device.json").read_text()))
            except (OSError, ValueError, TypeError):
                found = None
            whole = (
                found is not None
                and _alive(found.pid, found.export_name)
                and (found.kernel_nbd or loop.backing_file(found.device) == str(work / "mnt/nbd"))
            )
            if found is not None and whole:
                log.info("adopting %s of %s", found.device, found.volume_id)
                self.devices[found.volume_id] = found
                continue
            log.warning("releasing what a previous agent left in %s", work)
            self._teardown(work, found, force=True)

    # ---- bring up -----------------------------------------------------------------

    def connect(self, volume_id: str, device_name: str, export: dict[str, Any]) -> str:
        """Make the export a block device here and link it; returns the device path.

        Raises NodeDeviceError (the device is not up; nothing is left behind).
        """
        work = self.directory / volume_id
        if work.exists():
            self._teardown(work, None, force=True)
        work.mkdir(parents=True)
        psk_file = work / "psk"
        fd = os.open(psk_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as keys:
            keys.write(f"{export['psk_identity']}:{export['psk']}\n")
        proxy = proxy_args(export, psk_file, self.reconnect_seconds)
        try:
            if self.kernel_nbd:
                device, pid = self._connect_kernel(work, proxy)
            else:
                device, pid = self._connect_fuse(work, proxy)
        except (OSError, loop.LoopError, NodeDeviceError) as failure:
            self._teardown(work, None, force=True)
            raise NodeDeviceError(f"cannot bring up {volume_id}: {failure}") from None
        local = LocalDevice(volume_id, device_name, device, pid, export["name"], self.kernel_nbd)
        (work / "device.json").write_text(json.dumps(asdict(local)))
        _replace_link(by_id_path(volume_id, self.by_id_dir), device)
        for alias in device_aliases(device_name):
            _replace_link(self.alias_dir / alias, device)
        self.devices[volume_id] = local
        return device

    def _connect_fuse(self, work: Path, proxy: list[str]) -> tuple[str, int]:
        """nbdfuse shows the export as the file mnt/nbd; a direct-I/O loop device on it."""
        mnt = work / "mnt"
        mnt.mkdir()
        with (work / "log").open("wb") as output:
            command = ["nbdfuse", str(mnt / "nbd"), "--command", "nbdkit", "-s",
                       "--exit-with-parent", *proxy]  # fmt: skip
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not (is_mounted(mnt) and (mnt / "nbd").exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
                text = (work / "log").read_text(errors="replace").strip()
                raise NodeDeviceError(f"nbdfuse did not connect: {text or 'timed out'}")
            time.sleep(0.05)
        device = loop.attach(mnt / "nbd", direct_io=True)
        (work / "device").write_text(device)  # for a teardown before device.json exists
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while loop.size_bytes(device) != (mnt / "nbd").stat().st_size:
            if time.monotonic() > deadline:
                raise NodeDeviceError(f"{device} did not take the export's size")
            time.sleep(0.02)
        return device, process.pid

    def _connect_kernel(self, work: Path, proxy: list[str]) -> tuple[str, int]:
        """The kernel's client on a local nbdkit proxy (which speaks TLS-PSK to the server).

        Not exercised by fakestor's tests: their machines have no NBD module.
        """
        sock = work / "nbd.sock"
        with (work / "log").open("wb") as output:
            process = subprocess.Popen(
                ["nbdkit", "--foreground", "--unix", str(sock), *proxy],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise NodeDeviceError("the local nbdkit proxy did not start")
            time.sleep(0.05)
        for candidate in sorted(Path("/sys/block").glob("nbd*"), key=lambda p: int(p.name[3:])):
            if (candidate / "pid").exists():
                continue  # in use
            device = f"/dev/{candidate.name}"
            done = subprocess.run(
                ["nbd-client", "-unix", str(sock), device], capture_output=True, check=False
            )
            if done.returncode == 0:
                (work / "device").write_text(device)
                return device, process.pid
        process.kill()
        raise NodeDeviceError("no free /dev/nbd device would connect")

    # ---- release ------------------------------------------------------------------

    def release(self, volume_id: str, *, force: bool) -> bool:
        """Flush and remove the device and its links; False if it is in use (mounted)
        and not `force`, so the detach waits, as EBS's does."""
        local = self.devices.get(volume_id)
        work = self.directory / volume_id
        if local is not None and not force and loop.is_busy(local.device):
            return False
        self._teardown(work, local, force=force)
        self.devices.pop(volume_id, None)
        return True

    def release_all(self) -> None:
        for volume_id in list(self.devices):
            self.release(volume_id, force=True)

    def _teardown(self, work: Path, local: LocalDevice | None, *, force: bool) -> None:
        device = local.device if local else None
        if device is None and (work / "device").exists():
            device = (work / "device").read_text().strip()
        if device:
            with contextlib.suppress(OSError):  # a fenced device cannot flush: EIO
                fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if device.startswith("/dev/nbd"):
                subprocess.run(["nbd-client", "-d", device], capture_output=True, check=False)
            elif loop.backing_file(device) == str(work / "mnt/nbd"):
                try:
                    loop.detach(device, force=force)
                except loop.LoopError as failure:
                    log.warning("cannot release %s: %s", device, failure)
        if local is not None:
            self._unlink(local)
        mnt = work / "mnt"
        if is_mounted(mnt):
            # Lazily: a device still mounted (forced) keeps the file open until unmounted.
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        pid = local.pid if local else None
        if pid and _alive(pid, local.export_name if local else ""):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(pid, local.export_name if local else "") and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                if _alive(pid, local.export_name if local else ""):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    def _unlink(self, local: LocalDevice) -> None:
        link = by_id_path(local.volume_id, self.by_id_dir)
        with contextlib.suppress(OSError):
            if os.readlink(link) == local.device:
                link.unlink()
        for alias in device_aliases(local.device_name):
            with contextlib.suppress(OSError):
                if os.readlink(self.alias_dir / alias) == local.device:
                    (self.alias_dir / alias).unlink()
        for directory in (self.alias_dir, self.by_id_dir, self.by_id_dir.parent):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: ones fakestor made
