"""The volume driver: Docker's eight volume operations on EBS, with no transport in sight.

Each method raises PluginError with a message that tells the user what to do;
the HTTP layer turns it into `{"Err": message}`. The EC2 calls are InstanceVolumes'
(ebs.py); the options and tags are options.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fakestor.plugin import host
from fakestor.plugin.ebs import InstanceVolumes
from fakestor.plugin.imds import Identity
from fakestor.plugin.options import (
    NAME_TAG,
    VOLUME_NAME,
    Defaults,
    PluginError,
    VolumeOptions,
    check_name,
    creation_request,
    options_of,
)
from fakestor.plugin.state import MountRecord, MountState

log = logging.getLogger(__name__)

__all__ = ["Defaults", "PluginError", "VolumeDriver"]


@dataclass(frozen=True)
class _Mounted:
    device: str
    mountpoint: Path
    path: Path  # the directory containers see


class VolumeDriver:
    """Docker volumes as EBS volumes attached to, and mounted on, this instance."""

    def __init__(
        self,
        ec2: Any,
        identity: Identity,
        mount_root: Path,
        state: MountState,
        defaults: Defaults | None = None,
    ) -> None:
        self.ebs = InstanceVolumes(ec2, identity)
        self.identity = identity
        self.mount_root = mount_root
        self.state = state
        self.defaults = defaults or Defaults()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextlib.contextmanager
    def _volume_lock(self, name: str) -> Iterator[None]:
        """Operations on one volume run one at a time (no double attach, no racing unmount)."""
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    # ---- the protocol's operations -------------------------------------------

    def create(self, name: str, raw_options: Mapping[str, str] | None) -> None:
        check_name(name)
        options = VolumeOptions.parse(raw_options)
        with self._volume_lock(name):
            if self.ebs.find(name) is not None:
                return  # adopt the existing EBS volume of that name
            request = creation_request(name, options, self.defaults, self.identity.zone)
            volume_id = self.ebs.create(name, request)
            log.info("created %s as %s", name, volume_id)

    def remove(self, name: str) -> None:
        check_name(name)
        with self._volume_lock(name):
            record = self.state.get(name)
            if record is not None and record.mount_ids:
                # Docker counts the volume's users itself and asks only when there are none,
                # so these IDs are stale (a Mount Docker gave up on, say). The unmount below
                # still refuses if a process is using the filesystem.
                log.warning("%s: removing despite stale mount IDs %s", name, record.mount_ids)
            volume = self._unattached_recently(name) or self.ebs.find(name)
            if volume is None:
                return
            for attachment in volume["Attachments"]:
                if attachment["InstanceId"] != self.identity.instance_id:
                    raise PluginError(
                        f"volume {name} ({volume['VolumeId']}) is attached to instance "
                        f"{attachment['InstanceId']}; unmount it there first"
                    )
            if record is not None or volume["Attachments"]:
                self._release(name, volume["VolumeId"])
            self.ebs.delete(name, volume["VolumeId"])

    def mount(self, name: str, mount_id: str) -> str:
        """Attach, format if blank, and mount; one use of the volume per call.

        Docker may Mount the same ID more than once (`docker cp` on a running
        container) and Unmounts it as often, so each Mount is counted.
        """
        check_name(name)
        with self._volume_lock(name):
            record = self.state.get(name)
            if record is not None and host.is_mount_point(Path(record.mountpoint)):
                self._save(name, replace(record, mount_ids=[*record.mount_ids, mount_id]))
                return self._data_dir(record)
            volume = self._unattached_recently(name) or self.ebs.require(name)
            try:
                data = self._mount_here(name, volume)
                # Uses recorded before the mount point vanished are still to be unmounted.
                earlier = record.mount_ids if record is not None else []
                self._save(
                    name,
                    MountRecord(
                        volume["VolumeId"],
                        data.device,
                        str(data.mountpoint),
                        [*earlier, mount_id],
                    ),
                )
            except (PluginError, OSError) as failure:
                # Docker sends no Unmount for a failed Mount: undo it here, or the volume
                # stays attached to this instance with nobody to release it.
                if record is None:
                    self._undo_mount(name, volume["VolumeId"])
                if isinstance(failure, OSError):
                    raise PluginError(f"cannot mount volume {name}: {failure}") from None
                raise
            return str(data.path)

    def _mount_here(self, name: str, volume: Mapping[str, Any]) -> _Mounted:
        device = self.ebs.attach(name, volume)
        mountpoint = self.mount_root / name
        made = self._format_if_blank(name, device, volume)
        fresh = made is not None
        try:
            if made is not None:  # a filesystem just made spans its device: nothing to grow
                fstype, grown = made, None
                host.mount(device, mountpoint, fstype)
            else:
                fstype = host.filesystem_of(device) or ""
                grown = host.grow_unmounted(device, fstype)
                host.mount(device, mountpoint, fstype)
                grown = grown or host.grow_mounted(device, mountpoint, fstype)
        except host.HostError as failure:
            raise PluginError(f"cannot mount volume {name}: {failure}") from None
        if grown:
            # EBS grows the device; the filesystem is the instance's to grow, so the plugin does.
            log.info(
                "%s: grew its %s filesystem from %.1f to %.1f GiB to fill %s",
                name, fstype, grown[0] / 2**30, grown[1] / 2**30, device,
            )  # fmt: skip
        data = mountpoint / "data"
        if not data.exists():
            data.mkdir()
            fresh = True
        if fresh:
            self._apply_ownership(data, volume)
        return _Mounted(device, mountpoint, data)

    def _undo_mount(self, name: str, volume_id: str) -> None:
        try:
            self._release(name, volume_id)
        except PluginError as failure:
            log.warning("%s: cannot undo a failed mount: %s", name, failure)

    def unmount(self, name: str, mount_id: str) -> None:
        check_name(name)
        with self._volume_lock(name):
            record = self.state.get(name)
            if record is None:
                return
            remaining = list(record.mount_ids)
            if mount_id in remaining:
                remaining.remove(mount_id)  # one use of it; the same ID may hold others
            if remaining:
                self._save(name, replace(record, mount_ids=remaining))
                return
            self._release(name, record.volume_id)

    def path(self, name: str) -> str:
        record = self.state.get(name)
        return self._data_dir(record) if record and record.mount_ids else ""

    def get(self, name: str) -> dict[str, Any]:
        check_name(name)
        volume = self.ebs.require(name, recent=True)
        return {
            "Name": name,
            "Mountpoint": self.path(name),
            "CreatedAt": volume["CreateTime"].isoformat(),
            "Status": self._status(volume),
        }

    def list(self) -> list[dict[str, str]]:
        found = []
        for volume in self.ebs.named():
            name = next(t["Value"] for t in volume["Tags"] if t["Key"] == NAME_TAG)
            if not VOLUME_NAME.fullmatch(name):
                log.info(
                    "not listing %s: its Name tag %r is no volume name", volume["VolumeId"], name
                )
                continue
            found.append({"Name": name, "Mountpoint": self.path(name)})
        return found

    @staticmethod
    def capabilities() -> dict[str, str]:
        # An EBS volume is known to every node of the region, not just this one.
        return {"Scope": "global"}

    # ---- helpers ----------------------------------------------------------------

    def _unattached_recently(self, name: str) -> dict[str, Any] | None:
        """The volume as just seen, if it was attached nowhere: Mount's and Remove's usual case.

        Were it attached since, AttachVolume or DeleteVolume says so; a volume seen
        attached is looked up again, so neither acts on an attachment that has gone.
        """
        volume = self.ebs.recent(name)
        return volume if volume is not None and not volume["Attachments"] else None

    def _save(self, name: str, record: MountRecord) -> None:
        try:
            self.state.put(name, record)
        except OSError as failure:
            raise PluginError(
                f"cannot save the plugin state to {self.state.path}: {failure.strerror}"
            ) from None

    def _data_dir(self, record: MountRecord) -> str:
        return str(Path(record.mountpoint) / "data")

    def _status(self, volume: Mapping[str, Any]) -> dict[str, Any]:
        status: dict[str, Any] = {
            "VolumeId": volume["VolumeId"],
            "State": volume["State"],
            "Size": f"{volume['Size']} GiB",
            "Type": volume["VolumeType"],
            "AvailabilityZone": volume["AvailabilityZone"],
            "Encrypted": volume["Encrypted"],
        }
        if volume.get("SnapshotId"):
            status["SnapshotId"] = volume["SnapshotId"]
        if volume["Attachments"]:
            status["AttachedTo"] = ", ".join(
                f"{a['InstanceId']} as {a['Device']} ({a['State']})" for a in volume["Attachments"]
            )
        return status

    def _format_if_blank(self, name: str, device: str, volume: Mapping[str, Any]) -> str | None:
        """Format a blank device; the filesystem type made, None if it had one."""
        try:
            if host.filesystem_of(device) is not None:
                return None
            fstype = options_of(volume).get("fstype", self.defaults.fstype)
            log.info("formatting %s (%s) as %s", name, device, fstype)
            host.make_filesystem(device, fstype)
        except host.HostError as failure:
            raise PluginError(f"cannot prepare volume {name}: {failure}") from None
        return fstype

    def _apply_ownership(self, data: Path, volume: Mapping[str, Any]) -> None:
        options = options_of(volume)
        uid = int(options.get("uid", "-1"))
        gid = int(options.get("gid", "-1"))
        if uid >= 0 or gid >= 0:
            os.chown(data, uid, gid)
        if "mode" in options:
            os.chmod(data, int(options["mode"], 8))

    def release(self, name: str, volume_id: str) -> None:
        """`_release` under the volume's lock: for mounts found stale at start."""
        with self._volume_lock(name):
            self._release(name, volume_id)

    def _release(self, name: str, volume_id: str) -> None:
        """Unmount (if mounted here), detach from this instance and forget the mount."""
        mountpoint = self.mount_root / name
        try:
            host.unmount(mountpoint)
        except host.HostError as failure:
            raise PluginError(
                f"cannot unmount volume {name}: {failure}; a process still uses it"
            ) from None
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
        self.ebs.detach(name, volume_id)
        if self.state.get(name) is not None:
            try:
                self.state.drop(name)
            except OSError as failure:
                raise PluginError(
                    f"cannot save the plugin state to {self.state.path}: {failure.strerror}"
                ) from None
