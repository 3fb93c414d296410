"""The volume driver: Docker's eight volume operations on EBS, with no transport in sight.

Each method raises PluginError with a message that tells the user what to do;
the HTTP layer turns it into `{"Err": message}`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fakestor.device_names import canonical_device
from fakestor.plugin import host
from fakestor.plugin.imds import Identity
from fakestor.plugin.state import MountRecord, MountState

log = logging.getLogger(__name__)

NAME_TAG = "Name"
OPTION_TAG_PREFIX = "fakestor:"  # options a later Mount needs travel with the volume
VOLUME_TYPES = ("gp2", "gp3", "io1", "io2", "st1", "sc1", "standard")
DEVICE_NAMES = [f"/dev/sd{letter}" for letter in "fghijklmnopqrstuvwxyz"]
OPTIONS = {
    "size": "size in GiB (default 1)",
    "type": f"EBS volume type: {', '.join(VOLUME_TYPES)}",
    "iops": "provisioned IOPS (gp3, io1, io2)",
    "throughput": "provisioned MiB/s (gp3)",
    "snapshot": "snap-... id to restore from",
    "fstype": "ext4 or xfs (default ext4), used when the volume is first mounted",
    "encrypted": "true or false",
    "uid": "owner of the volume's root directory",
    "gid": "group of the volume's root directory",
    "mode": "octal permissions of the volume's root directory, e.g. 0750",
}
WAIT_TIMEOUT = 120.0
# As Docker's local driver: names that are safe as one path component under the mount root.
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


class PluginError(Exception):
    """A failed volume operation; the message is shown to the Docker user as is."""


def check_name(name: str) -> None:
    """Refuse names that are not one safe path component (`..`, `a/b`, `.x`)."""
    if not VOLUME_NAME.fullmatch(name):
        raise PluginError(
            f"volume name {name!r} is not valid: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )


@dataclass(frozen=True)
class _Mounted:
    device: str
    mountpoint: Path
    path: Path  # the directory containers see


@dataclass(frozen=True)
class Defaults:
    size: int = 1
    volume_type: str = "gp3"
    fstype: str = "ext4"


def _integer(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]+", value):
        raise PluginError(f"option {name}={value!r} must be a whole number from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise PluginError(f"option {name}={value} is out of range: use {low} to {high}")
    return number


def _boolean(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise PluginError(f"option {name}={value!r} must be true or false")


@dataclass(frozen=True)
class VolumeOptions:
    """`docker volume create -o` options, validated."""

    size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    snapshot: str | None = None
    fstype: str | None = None
    encrypted: bool | None = None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None

    @classmethod
    def parse(cls, options: Mapping[str, str] | None) -> VolumeOptions:
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise PluginError(
                f"unknown option {', '.join(unknown)}; valid options are {', '.join(OPTIONS)}"
            )
        parsed: dict[str, Any] = {}
        if "size" in options:
            parsed["size"] = _integer("size", options["size"], 1, 65536)
        if "type" in options:
            if options["type"] not in VOLUME_TYPES:
                raise PluginError(
                    f"option type={options['type']!r} is not an EBS volume type; use one of "
                    f"{', '.join(VOLUME_TYPES)}"
                )
            parsed["volume_type"] = options["type"]
        if "iops" in options:
            parsed["iops"] = _integer("iops", options["iops"], 100, 256_000)
        if "throughput" in options:
            parsed["throughput"] = _integer("throughput", options["throughput"], 125, 2000)
        if "snapshot" in options:
            if not re.fullmatch(r"snap-([0-9a-f]{8}|[0-9a-f]{17})", options["snapshot"]):
                raise PluginError(
                    f"option snapshot={options['snapshot']!r} is not a snapshot id "
                    "(snap-0123456789abcdef0)"
                )
            parsed["snapshot"] = options["snapshot"]
        if "fstype" in options:
            if options["fstype"] not in host.FILESYSTEMS:
                raise PluginError(
                    f"option fstype={options['fstype']!r} is not supported; use "
                    f"{' or '.join(host.FILESYSTEMS)}"
                )
            parsed["fstype"] = options["fstype"]
        if "encrypted" in options:
            parsed["encrypted"] = _boolean("encrypted", options["encrypted"])
        for name in ("uid", "gid"):
            if name in options:
                parsed[name] = _integer(name, options[name], 0, 2**32 - 2)
        if "mode" in options:
            if not re.fullmatch(r"0?[0-7]{3,4}", options["mode"]):
                raise PluginError(
                    f"option mode={options['mode']!r} must be octal permissions such as 0755"
                )
            parsed["mode"] = int(options["mode"], 8)
        return cls(**parsed)


def _api_error(failure: ClientError | BotoCoreError, doing: str) -> PluginError:
    if isinstance(failure, ClientError):
        error = failure.response.get("Error", {})
        return PluginError(f"{doing}: EBS said {error.get('Code')}: {error.get('Message')}")
    return PluginError(f"{doing}: cannot reach the EBS endpoint ({failure})")


class VolumeDriver:
    """Docker volumes as EBS volumes attached to, and mounted on, this instance."""

    def __init__(
        self,
        ec2: Any,
        identity: Identity,
        mount_root: Path,
        state: MountState,
        defaults: Defaults = Defaults(),
    ) -> None:
        self.ec2 = ec2
        self.identity = identity
        self.mount_root = mount_root
        self.state = state
        self.defaults = defaults
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Choosing a device name and attaching is one step per instance.
        self._attach_lock = threading.Lock()

    @contextlib.contextmanager
    def _volume_lock(self, name: str) -> Iterator[None]:
        """Operations on one volume run one at a time (no double attach, no racing unmount)."""
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    # ---- EBS lookups ----------------------------------------------------------

    def _find(self, name: str) -> dict[str, Any] | None:
        try:
            volumes = self.ec2.describe_volumes(
                Filters=[{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
            )["Volumes"]
        except (ClientError, BotoCoreError) as failure:
            raise _api_error(failure, f"cannot look up volume {name}") from None
        volumes = [v for v in volumes if v["State"] not in ("deleting", "deleted")]
        if len(volumes) > 1:
            ids = ", ".join(v["VolumeId"] for v in volumes)
            raise PluginError(
                f"several EBS volumes are tagged Name={name} ({ids}); rename or delete all but one"
            )
        return volumes[0] if volumes else None

    def _require(self, name: str) -> dict[str, Any]:
        volume = self._find(name)
        if volume is None:
            raise PluginError(
                f"no EBS volume is tagged Name={name}; create it with docker volume create "
                f"-d <this driver> {name}"
            )
        return volume

    def _wait(self, what: str, check: Any, timeout: float = WAIT_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
            except (ClientError, BotoCoreError) as failure:
                raise _api_error(failure, f"while waiting for {what}") from None
            if result:
                return result
            if time.monotonic() > deadline:
                raise PluginError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def _waiter(self, name: str, **kwargs: Any) -> None:
        try:
            self.ec2.get_waiter(name).wait(
                WaiterConfig={"Delay": 0.2, "MaxAttempts": int(WAIT_TIMEOUT / 0.2)}, **kwargs
            )
        except Exception as failure:  # botocore's WaiterError and client errors alike
            raise PluginError(f"waiting for {name.replace('_', ' ')} failed: {failure}") from None

    def _describe(self, volume_id: str) -> dict[str, Any]:
        volume: dict[str, Any] = self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        return volume

    @staticmethod
    def _options_of(volume: Mapping[str, Any]) -> dict[str, str]:
        return {
            tag["Key"].removeprefix(OPTION_TAG_PREFIX): tag["Value"]
            for tag in volume.get("Tags", [])
            if tag["Key"].startswith(OPTION_TAG_PREFIX)
        }

    # ---- the protocol's operations -------------------------------------------

    def create(self, name: str, raw_options: Mapping[str, str] | None) -> None:
        check_name(name)
        options = VolumeOptions.parse(raw_options)
        with self._volume_lock(name):
            if self._find(name) is not None:
                return  # adopt the existing EBS volume of that name
            tags = [{"Key": NAME_TAG, "Value": name}]
            tags.append(
                {
                    "Key": OPTION_TAG_PREFIX + "fstype",
                    "Value": options.fstype or self.defaults.fstype,
                }
            )
            for key in ("uid", "gid"):
                value = getattr(options, key)
                if value is not None:
                    tags.append({"Key": OPTION_TAG_PREFIX + key, "Value": str(value)})
            if options.mode is not None:
                tags.append({"Key": OPTION_TAG_PREFIX + "mode", "Value": f"{options.mode:04o}"})
            request: dict[str, Any] = {
                "AvailabilityZone": self.identity.zone,
                "VolumeType": options.volume_type or self.defaults.volume_type,
                "TagSpecifications": [{"ResourceType": "volume", "Tags": tags}],
            }
            if options.snapshot:
                request["SnapshotId"] = options.snapshot
                if options.size is not None:
                    request["Size"] = options.size
            else:
                request["Size"] = options.size or self.defaults.size
            for key, field_name in (
                ("Iops", "iops"), ("Throughput", "throughput"), ("Encrypted", "encrypted"),
            ):  # fmt: skip
                value = getattr(options, field_name)
                if value is not None:
                    request[key] = value
            try:
                volume_id = self.ec2.create_volume(**request)["VolumeId"]
            except (ClientError, BotoCoreError) as failure:
                raise _api_error(failure, f"cannot create volume {name}") from None
            self._waiter("volume_available", VolumeIds=[volume_id])
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
            volume = self._find(name)
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
            try:
                self.ec2.delete_volume(VolumeId=volume["VolumeId"])
            except (ClientError, BotoCoreError) as failure:
                raise _api_error(failure, f"cannot delete volume {name}") from None
            self._waiter("volume_deleted", VolumeIds=[volume["VolumeId"]])

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
            volume = self._require(name)
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
        device = self._attach(name, volume)
        mountpoint = self.mount_root / name
        fresh = self._format_if_blank(name, device, volume)
        try:
            host.mount(device, mountpoint)
        except host.HostError as failure:
            raise PluginError(f"cannot mount volume {name}: {failure}") from None
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
        volume = self._require(name)
        return {
            "Name": name,
            "Mountpoint": self.path(name),
            "CreatedAt": volume["CreateTime"].isoformat(),
            "Status": self._status(volume),
        }

    def list(self) -> list[dict[str, str]]:
        try:
            volumes = self.ec2.describe_volumes(
                Filters=[{"Name": "tag-key", "Values": [NAME_TAG]}]
            )["Volumes"]
        except (ClientError, BotoCoreError) as failure:
            raise _api_error(failure, "cannot list volumes") from None
        found = []
        for volume in volumes:
            if volume["State"] in ("deleting", "deleted"):
                continue
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

    def _attach(self, name: str, volume: Mapping[str, Any]) -> str:
        volume_id = volume["VolumeId"]
        if volume["AvailabilityZone"] != self.identity.zone:
            raise PluginError(
                f"volume {name} ({volume_id}) is in {volume['AvailabilityZone']}, this instance "
                f"in {self.identity.zone}; an EBS volume attaches only within its zone (restore "
                f"a snapshot of it here)"
            )
        ours = [a for a in volume["Attachments"] if a["InstanceId"] == self.identity.instance_id]
        others = [a for a in volume["Attachments"] if a["InstanceId"] != self.identity.instance_id]
        if others and not volume.get("MultiAttachEnabled"):
            raise PluginError(
                f"volume {name} ({volume_id}) is attached to instance {others[0]['InstanceId']}; "
                "stop the containers using it there (or detach it) first"
            )
        if ours:
            device_name = ours[0]["Device"]
            if ours[0]["State"] == "detaching":
                raise PluginError(f"volume {name} is still detaching; retry in a moment")
        else:
            device_name = self._attach_new(name, volume_id)
        self._wait(
            f"{volume_id} to attach",
            lambda: any(
                a["InstanceId"] == self.identity.instance_id and a["State"] == "attached"
                for a in self._describe(volume_id)["Attachments"]
            ),
        )
        try:
            return host.find_device(volume_id, device_name)
        except host.HostError as failure:
            raise PluginError(str(failure)) from None

    def _attach_new(self, name: str, volume_id: str) -> str:
        with self._attach_lock:
            try:
                used = {
                    a["Device"]
                    for v in self.ec2.describe_volumes(
                        Filters=[
                            {
                                "Name": "attachment.instance-id",
                                "Values": [self.identity.instance_id],
                            }
                        ]
                    )["Volumes"]
                    for a in v["Attachments"]
                    if a["InstanceId"] == self.identity.instance_id
                }
            except (ClientError, BotoCoreError) as failure:
                raise _api_error(failure, f"cannot attach volume {name}") from None
            taken = {canonical_device(u) for u in used}
            for device_name in DEVICE_NAMES:
                if canonical_device(device_name) in taken:
                    continue
                try:
                    self.ec2.attach_volume(
                        VolumeId=volume_id, InstanceId=self.identity.instance_id, Device=device_name
                    )
                except ClientError as failure:
                    message = failure.response.get("Error", {}).get("Message", "")
                    if "already in use" in message:
                        continue  # taken by someone else meanwhile: try the next name
                    raise _api_error(failure, f"cannot attach volume {name}") from None
                except BotoCoreError as failure:
                    raise _api_error(failure, f"cannot attach volume {name}") from None
                return device_name
        raise PluginError(
            f"no free device name on {self.identity.instance_id} for {name}; detach a volume first"
        )

    def _format_if_blank(self, name: str, device: str, volume: Mapping[str, Any]) -> bool:
        try:
            if host.filesystem_of(device) is not None:
                return False
            fstype = self._options_of(volume).get("fstype", self.defaults.fstype)
            log.info("formatting %s (%s) as %s", name, device, fstype)
            host.make_filesystem(device, fstype)
        except host.HostError as failure:
            raise PluginError(f"cannot prepare volume {name}: {failure}") from None
        return True

    def _apply_ownership(self, data: Path, volume: Mapping[str, Any]) -> None:
        options = self._options_of(volume)
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
        try:
            volume = self._describe(volume_id)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") != "InvalidVolume.NotFound":
                raise _api_error(failure, f"cannot look up volume {name}") from None
            volume = {"Attachments": []}  # deleted meanwhile: nothing to detach
        except BotoCoreError as failure:
            raise _api_error(failure, f"cannot look up volume {name}") from None
        if any(a["InstanceId"] == self.identity.instance_id for a in volume["Attachments"]):
            try:
                self.ec2.detach_volume(VolumeId=volume_id, InstanceId=self.identity.instance_id)
            except ClientError as failure:
                if failure.response.get("Error", {}).get("Code") != "IncorrectState":
                    raise _api_error(failure, f"cannot detach volume {name}") from None
            self._wait(
                f"{volume_id} to detach",
                lambda: (
                    not any(
                        a["InstanceId"] == self.identity.instance_id
                        for a in self._describe(volume_id)["Attachments"]
                    )
                ),
            )
        if self.state.get(name) is not None:
            try:
                self.state.drop(name)
            except OSError as failure:
                raise PluginError(
                    f"cannot save the plugin state to {self.state.path}: {failure.strerror}"
                ) from None
