"""The EBS control plane: volumes, snapshots, attachments, instances and their rules.

Every rule and state transition lives here; nothing here knows about HTTP or XML.
A request validates, records the transitional state in one transaction and
returns; the backend work runs as a task that records the outcome.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from backends import Backend, BackendError, DeviceBusy
from fakestor import device_names, errors, failpoints, ids, rules
from fakestor.filter_values import (
    INSTANCE_FILTERS,
    MODIFICATION_FILTERS,
    SNAPSHOT_FILTERS,
    TAG_FILTERS,
    VOLUME_FILTERS,
    VOLUME_STATUS_FILTERS,
    instance_filter_values,
    modification_filter_values,
    snapshot_filter_values,
    volume_filter_values,
    volume_status_filter_values,
)
from fakestor.filters import Filter, check_filters, matches
from fakestor.resources import (
    Attachment,
    Instance,
    Modification,
    Region,
    Snapshot,
    Tag,
    Volume,
    from_text,
    to_text,
    utcnow,
)
from fakestor.store import Store
from fakestor.tasks import RetryLater, TaskRunner

log = logging.getLogger(__name__)

MAX_TAGS_PER_RESOURCE = 50
DETACH_RETRY_SECONDS = 1.0
PROGRESS_INTERVAL = 0.25  # seconds between recorded snapshot progress updates
MODIFICATIONS_PER_DAY = 4  # ModifyVolume: "up to four times within a rolling 24-hour period"
MODIFICATION_WINDOW = timedelta(hours=24)
HOST_INSTANCE_TYPE = "m5.large"
HOST_IMAGE_ID = "ami-00000000000f4e570"  # fakestor's own, never launched from

_RESOURCE_TYPES = {"vol": "volume", "snap": "snapshot", "i": "instance"}


@dataclass(frozen=True)
class TagSpec:
    resource_type: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class VolumeRequest:
    """CreateVolume's parameters."""

    zone: str | None = None
    size: int | None = None
    snapshot_id: str | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    multi_attach: bool = False


@dataclass(frozen=True)
class VolumeChange:
    """ModifyVolume's parameters; None keeps the current value."""

    size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    multi_attach: bool | None = None


def _dry_run(dry_run: bool) -> None:
    if dry_run:
        raise errors.DryRunOperation()


def check_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 128:
            raise errors.InvalidParameterValue(
                f"Tag key '{key[:140]}' must be 1 to 128 characters long."
            )
        if key.lower().startswith("aws:"):
            raise errors.InvalidParameterValue(
                f"Tag key '{key}' is reserved: keys starting with 'aws:' are for AWS use."
            )
        if len(value) > 256:
            raise errors.InvalidParameterValue(
                f"Tag value for key '{key}' is longer than 256 characters."
            )


def _tags_for(specs: Sequence[TagSpec], resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in specs:
        if spec.resource_type != resource_type:
            raise errors.InvalidParameterValue(
                f"'{spec.resource_type}' is not a valid taggable resource type for this "
                f"operation; use '{resource_type}'."
            )
        tags.update(spec.tags)
    check_tags(tags)
    if len(tags) > MAX_TAGS_PER_RESOURCE:
        raise errors.TagLimitExceeded(
            f"The maximum number of tags ({MAX_TAGS_PER_RESOURCE}) per resource was exceeded."
        )
    return tags


def _clear_failure(db: sqlite3.Connection, volume_id: str) -> None:
    """Forget the last failed operation's reason once one succeeds; damage stays reported."""
    db.execute(
        "UPDATE volumes SET status_reason=NULL WHERE id=? AND io_enabled=1 AND state!='error'",
        (volume_id,),
    )


class Ebs:
    """The control plane. Methods raise `errors.Ec2Error` subclasses for bad requests."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        region: Region,
        host_instance_id: str,
        tasks: TaskRunner | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.region = region
        self.host_instance_id = host_instance_id
        self.tasks = tasks or TaskRunner()
        self._register_host()

    # ---- lifecycle -------------------------------------------------------

    def _register_host(self) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO instances"
                "(id, zone, state, instance_type, image_id, launch_time, is_host) "
                "VALUES (?, ?, 'running', ?, ?, ?, 1)",
                (
                    self.host_instance_id,
                    self.region.zones[0],
                    HOST_INSTANCE_TYPE,
                    HOST_IMAGE_ID,
                    to_text(utcnow()),
                ),
            )

    def reconcile(self) -> list[str]:
        """Compare the records with what the backend finds; repair, and report what is not.

        Returns one line per finding, for the log.
        """
        inventory = self.backend.inventory()
        if inventory is None:
            return []
        notes: list[str] = []
        with self.store.transaction() as db:
            volumes = {volume.id: volume for volume in self._volumes(db)}
            snapshots = {snapshot.id: snapshot for snapshot in self._snapshots(db)}
            trash = {row[0] for row in db.execute("SELECT resource_id FROM trash")}
            for volume in volumes.values():
                if volume.state in ("available", "in-use") and volume.id not in inventory.volumes:
                    db.execute(
                        "UPDATE volumes SET state='error', io_enabled=0, status_reason=? "
                        "WHERE id=?",
                        ("the volume's data is missing from the data dir", volume.id),
                    )
                    notes.append(f"{volume.id}: data missing; marked 'error'")
            for snapshot in snapshots.values():
                if snapshot.state == "completed" and snapshot.id not in inventory.snapshots:
                    db.execute(
                        "UPDATE snapshots SET state='error', state_message=? WHERE id=?",
                        ("the snapshot's data is missing from the data dir", snapshot.id),
                    )
                    notes.append(f"{snapshot.id}: data missing; marked 'error'")
            for resource_id, damage in sorted(inventory.damaged.items()):
                damaged_volume = volumes.get(resource_id)
                damaged_snapshot = snapshots.get(resource_id)
                if damaged_volume is not None and damaged_volume.state in ("available", "in-use"):
                    # Impaired, as EBS reports a volume whose data may be inconsistent.
                    db.execute(
                        "UPDATE volumes SET io_enabled=0, status_reason=? WHERE id=?",
                        (damage, resource_id),
                    )
                    notes.append(f"{resource_id}: {damage}; I/O disabled, status 'impaired'")
                elif damaged_snapshot is not None and damaged_snapshot.state == "completed":
                    db.execute(
                        "UPDATE snapshots SET state='error', state_message=? WHERE id=?",
                        (damage, resource_id),
                    )
                    notes.append(f"{resource_id}: {damage}; marked 'error'")
        host_attached: dict[str, str] = {}
        for volume in volumes.values():
            for attachment in volume.attachments:
                if attachment.instance_id == self.host_instance_id:
                    host_attached[volume.id] = attachment.state
        for volume_id, state in host_attached.items():
            if state == "attached" and volume_id in inventory.volumes:
                # Devices and links do not survive a reboot; bind and link again if needed.
                self._submit_relink(volume_id)
        for volume_id, device in inventory.attached.items():
            if volume_id not in host_attached:
                notes.append(f"{volume_id}: {device} bound with no attachment; detaching")
                self._submit_release(volume_id)
        for volume_id in sorted(inventory.volumes - set(volumes)):
            notes.append(f"{volume_id}: data without a record; kept, not served")
        for snapshot_id in sorted(inventory.snapshots - set(snapshots) - trash):
            notes.append(f"{snapshot_id}: snapshot data without a record; kept, not served")
        for note in notes:
            log.warning("reconcile: %s", note)
        return notes

    def _submit_relink(self, volume_id: str) -> None:
        def work() -> None:
            with self.store.transaction() as db:
                row = db.execute(
                    "SELECT device, state FROM attachments WHERE volume_id=? AND instance_id=?",
                    (volume_id, self.host_instance_id),
                ).fetchone()
            if row is None or row["state"] != "attached":
                return
            try:
                device_path = self.backend.attach_volume(volume_id, row["device"])
            except BackendError as failure:
                log.warning("re-attaching %s failed: %s", volume_id, failure)
                return
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE attachments SET device_path=? WHERE volume_id=? AND instance_id=?",
                    (device_path, volume_id, self.host_instance_id),
                )

        self.tasks.submit([volume_id], work, f"relink {volume_id}")

    def _submit_release(self, volume_id: str) -> None:
        def work() -> None:
            try:
                self.backend.detach_volume(volume_id, force=False)
            except BackendError as failure:
                log.warning("cannot release %s, left bound: %s", volume_id, failure)

        self.tasks.submit([volume_id], work, f"release {volume_id}")

    def resume(self) -> None:
        """Reconcile with the backend, then restart every transition left unfinished."""
        self.reconcile()
        with self.store.transaction() as db:
            creating = [
                (r["id"], r["snapshot_id"])
                for r in db.execute("SELECT id, snapshot_id FROM volumes WHERE state='creating'")
            ]
            trash = [r["resource_id"] for r in db.execute("SELECT resource_id FROM trash")]
            deleting = [
                r["id"] for r in db.execute("SELECT id FROM volumes WHERE state='deleting'")
            ]
            attaching = [
                (r["volume_id"], r["instance_id"])
                for r in db.execute("SELECT * FROM attachments WHERE state='attaching'")
            ]
            detaching = [
                (r["volume_id"], r["instance_id"])
                for r in db.execute("SELECT * FROM attachments WHERE state='detaching'")
            ]
            pending = [
                (r["id"], r["volume_id"], r["source_snapshot_id"])
                for r in db.execute("SELECT * FROM snapshots WHERE state='pending'")
            ]
            modifying = [
                r["volume_id"]
                for r in db.execute(
                    "SELECT volume_id FROM modifications WHERE state IN ('modifying','optimizing')"
                )
            ]
            instances = [
                (r["id"], r["state"])
                for r in db.execute(
                    "SELECT id, state FROM instances WHERE state IN ('pending','shutting-down')"
                )
            ]
        # Work that reads data first, deletes last: each resource's queue keeps this order.
        for volume_id, snapshot_id in creating:
            self._submit_create_volume(volume_id, snapshot_id)
        for snapshot_id, volume_id, source_id in pending:
            if source_id:
                self._submit_copy_snapshot(source_id, snapshot_id)
            else:
                self._submit_create_snapshot(snapshot_id, volume_id)
        for volume_id, instance_id in attaching:
            self._submit_attach(volume_id, instance_id)
        for volume_id, instance_id in detaching:
            self._submit_detach(volume_id, instance_id)
        for volume_id in deleting:
            self._submit_delete_volume(volume_id)
        for snapshot_id in trash:
            self._submit_empty_trash(snapshot_id)
        for volume_id in modifying:
            self._submit_modify(volume_id)
        for instance_id, state in instances:
            if state == "pending":
                self._submit_launch(instance_id)
            else:
                self._submit_terminate(instance_id)

    def close(self) -> None:
        self.tasks.shutdown()

    # ---- loading ---------------------------------------------------------

    def _tags_of(
        self, db: sqlite3.Connection, resource_type: str, ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, str]]:
        """Tags by resource id: of every resource of the type, or only of `ids`."""
        tags: dict[str, dict[str, str]] = {}
        if ids is None:
            rows = db.execute(
                "SELECT resource_id, key, value FROM tags WHERE resource_type=?", (resource_type,)
            )
        else:
            marks = ",".join("?" * len(ids))
            rows = db.execute(
                f"SELECT resource_id, key, value FROM tags WHERE resource_id IN ({marks})", ids
            )
        for row in rows:
            tags.setdefault(row["resource_id"], {})[row["key"]] = row["value"]
        return tags

    @staticmethod
    def _attachment(row: sqlite3.Row) -> Attachment:
        return Attachment(
            volume_id=row["volume_id"],
            instance_id=row["instance_id"],
            device=row["device"],
            state=row["state"],
            attach_time=from_text(row["attach_time"]),
            delete_on_termination=bool(row["delete_on_termination"]),
            device_path=row["device_path"],
            force_detach=bool(row["force_detach"]),
        )

    def _attachments_by_volume(
        self, db: sqlite3.Connection, volume_ids: Sequence[str] | None = None
    ) -> dict[str, list[Attachment]]:
        found: dict[str, list[Attachment]] = {}
        if volume_ids is None:
            rows = db.execute("SELECT * FROM attachments ORDER BY attach_time")
        else:
            marks = ",".join("?" * len(volume_ids))
            rows = db.execute(
                f"SELECT * FROM attachments WHERE volume_id IN ({marks}) ORDER BY attach_time",
                volume_ids,
            )
        for row in rows:
            found.setdefault(row["volume_id"], []).append(self._attachment(row))
        return found

    def _volumes(
        self, db: sqlite3.Connection, volume_ids: Sequence[str] | None = None
    ) -> list[Volume]:
        if volume_ids is None:
            rows = db.execute("SELECT * FROM volumes").fetchall()
        else:
            marks = ",".join("?" * len(volume_ids))
            rows = db.execute(f"SELECT * FROM volumes WHERE id IN ({marks})", volume_ids).fetchall()
        # Looking up a few volumes reads only their tags and attachments.
        tags = self._tags_of(db, "volume", volume_ids)
        attachments = self._attachments_by_volume(db, volume_ids)
        return [
            Volume(
                id=row["id"],
                size=row["size"],
                volume_type=row["volume_type"],
                iops=row["iops"],
                throughput=row["throughput"],
                zone=row["zone"],
                state=row["state"],
                snapshot_id=row["snapshot_id"],
                encrypted=bool(row["encrypted"]),
                kms_key_id=row["kms_key_id"],
                multi_attach=bool(row["multi_attach"]),
                auto_enable_io=bool(row["auto_enable_io"]),
                io_enabled=bool(row["io_enabled"]),
                create_time=from_text(row["create_time"]),
                status_reason=row["status_reason"],
                attachments=attachments.get(row["id"], []),
                tags=tags.get(row["id"], {}),
            )
            for row in rows
        ]

    def _volume(self, db: sqlite3.Connection, volume_id: str) -> Volume:
        ids.check(ids.VOLUME, volume_id)
        found = self._volumes(db, [volume_id])
        if not found:
            raise errors.InvalidVolumeNotFound(volume_id)
        return found[0]

    def _snapshots(
        self, db: sqlite3.Connection, snapshot_ids: Sequence[str] | None = None
    ) -> list[Snapshot]:
        if snapshot_ids is None:
            rows = db.execute("SELECT * FROM snapshots").fetchall()
        else:
            marks = ",".join("?" * len(snapshot_ids))
            rows = db.execute(
                f"SELECT * FROM snapshots WHERE id IN ({marks})", snapshot_ids
            ).fetchall()
        tags = self._tags_of(db, "snapshot")
        grants: dict[str, list[tuple[str, str]]] = {}
        for grant in db.execute("SELECT * FROM snapshot_permissions"):
            grants.setdefault(grant["snapshot_id"], []).append(
                (grant["grantee_kind"], grant["grantee"])
            )
        snapshots = []
        for row in rows:
            granted = grants.get(row["id"], [])
            snapshots.append(
                Snapshot(
                    id=row["id"],
                    volume_id=row["volume_id"],
                    volume_size=row["volume_size"],
                    state=row["state"],
                    progress=row["progress"],
                    start_time=from_text(row["start_time"]),
                    completion_time=(
                        from_text(row["completion_time"]) if row["completion_time"] else None
                    ),
                    description=row["description"],
                    encrypted=bool(row["encrypted"]),
                    kms_key_id=row["kms_key_id"],
                    owner_id=self.region.account_id,
                    source_snapshot_id=row["source_snapshot_id"],
                    state_message=row["state_message"],
                    tags=tags.get(row["id"], {}),
                    public=("group", "all") in granted,
                    shared_with=sorted(grantee for kind, grantee in granted if kind == "user"),
                )
            )
        return snapshots

    def _snapshot(self, db: sqlite3.Connection, snapshot_id: str) -> Snapshot:
        ids.check(ids.SNAPSHOT, snapshot_id)
        found = self._snapshots(db, [snapshot_id])
        if not found:
            raise errors.InvalidSnapshotNotFound(snapshot_id)
        return found[0]

    def _instances(self, db: sqlite3.Connection) -> list[Instance]:
        tags = self._tags_of(db, "instance")
        by_instance: dict[str, list[Attachment]] = {}
        for attachment_list in self._attachments_by_volume(db).values():
            for attachment in attachment_list:
                by_instance.setdefault(attachment.instance_id, []).append(attachment)
        return [
            Instance(
                id=row["id"],
                zone=row["zone"],
                state=row["state"],
                instance_type=row["instance_type"],
                image_id=row["image_id"],
                launch_time=from_text(row["launch_time"]),
                is_host=bool(row["is_host"]),
                reservation_id=row["reservation_id"] or "r-" + row["id"].removeprefix("i-"),
                launch_index=row["launch_index"],
                tags=tags.get(row["id"], {}),
                attachments=by_instance.get(row["id"], []),
            )
            for row in db.execute("SELECT * FROM instances")
        ]

    def _instance(self, db: sqlite3.Connection, instance_id: str) -> Instance:
        ids.check(ids.INSTANCE, instance_id)
        for instance in self._instances(db):
            if instance.id == instance_id:
                return instance
        raise errors.InvalidInstanceIdNotFound(instance_id)

    def _set_tags(
        self, db: sqlite3.Connection, resource_id: str, resource_type: str, tags: Mapping[str, str]
    ) -> None:
        db.executemany(
            "INSERT INTO tags(resource_id, resource_type, key, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(resource_id, key) DO UPDATE SET value=excluded.value",
            [(resource_id, resource_type, key, value) for key, value in tags.items()],
        )
        count = db.execute(
            "SELECT COUNT(*) FROM tags WHERE resource_id=?", (resource_id,)
        ).fetchone()[0]
        if count > MAX_TAGS_PER_RESOURCE:
            raise errors.TagLimitExceeded(
                f"The maximum number of tags ({MAX_TAGS_PER_RESOURCE}) for resource "
                f"{resource_id} was exceeded."
            )

    # ---- volumes ---------------------------------------------------------

    def check_zone(self, zone: str) -> str:
        if zone not in self.region.zones:
            raise errors.InvalidParameterValue(
                f"Invalid availability zone: [{zone}]. Zones of {self.region.name}: "
                f"{', '.join(self.region.zones)}."
            )
        return zone

    def _check_capacity(self, size_gib: int) -> None:
        """Refuse up front a size EBS allows but this data dir cannot hold."""
        limit = self.backend.size_limit()
        if limit is not None and size_gib > limit.largest_gib:
            raise errors.InsufficientVolumeCapacity(
                f"There is not enough capacity to fulfill your EBS volume provision request: "
                f"a {size_gib} GiB volume does not fit here ({limit.reason})."
            )

    def create_volume(
        self, request: VolumeRequest, tag_specs: Sequence[TagSpec] = (), dry_run: bool = False
    ) -> Volume:
        if request.zone is None:
            raise errors.MissingParameter("AvailabilityZone or AvailabilityZoneId")
        zone = self.check_zone(request.zone)
        tags = _tags_for(tag_specs, "volume")
        volume_type = request.volume_type or rules.DEFAULT_VOLUME_TYPE
        with self.store.transaction() as db:
            # With encryption by default on, every new volume is encrypted, as on EC2.
            encrypted = bool(request.encrypted) or self.encryption_by_default()
            kms_key_id = request.kms_key_id
            size = request.size
            if request.snapshot_id is not None:
                snapshot = self._snapshot(db, request.snapshot_id)
                if snapshot.state != "completed":
                    raise errors.IncorrectState(
                        f"Snapshot '{snapshot.id}' is in invalid state - {snapshot.state}"
                    )
                if size is None:
                    size = snapshot.volume_size
                elif size < snapshot.volume_size:
                    raise errors.InvalidParameterValue(
                        f"Volume of {size}GiB is too small; minimum is "
                        f"{snapshot.volume_size}GiB (the size of {snapshot.id})."
                    )
                if snapshot.encrypted:
                    if request.encrypted is False:
                        raise errors.InvalidParameterCombination(
                            f"Snapshot {snapshot.id} is encrypted, so a volume restored from "
                            "it must be encrypted too."
                        )
                    encrypted = True
                    kms_key_id = kms_key_id or snapshot.kms_key_id
            elif size is None:
                raise errors.MissingParameter("size or snapshotId")
            if kms_key_id is not None and not encrypted:
                raise errors.InvalidParameterDependency("KmsKeyId", "Encrypted")
            if encrypted and kms_key_id is None:
                kms_key_id = self.region.default_kms_key_id
            performance = rules.check_volume_config(
                volume_type, size, request.iops, request.throughput, request.multi_attach
            )
            self._check_capacity(size)
            _dry_run(dry_run)
            volume_id = ids.new_id(ids.VOLUME)
            db.execute(
                "INSERT INTO volumes(id, size, volume_type, iops, throughput, zone, state, "
                "snapshot_id, encrypted, kms_key_id, multi_attach, create_time) "
                "VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?, ?, ?)",
                (
                    volume_id,
                    size,
                    volume_type,
                    performance.iops,
                    performance.throughput,
                    zone,
                    request.snapshot_id,
                    int(encrypted),
                    kms_key_id,
                    int(request.multi_attach),
                    to_text(utcnow()),
                ),
            )
            self._set_tags(db, volume_id, "volume", tags)
            volume = self._volume(db, volume_id)
        self._submit_create_volume(volume_id, request.snapshot_id)
        return volume

    def _submit_create_volume(self, volume_id: str, snapshot_id: str | None) -> None:
        def work() -> None:
            with self.store.transaction() as db:
                row = db.execute(
                    "SELECT size, snapshot_id, state FROM volumes WHERE id=?", (volume_id,)
                ).fetchone()
            if row is None or row["state"] != "creating":
                return
            try:
                self.backend.create_volume(volume_id, row["size"], row["snapshot_id"])
            except BackendError as failure:
                self._set_volume_state(volume_id, "error", reason=str(failure))
                return
            self._set_volume_state(volume_id, "available")

        def failed(failure: Exception) -> None:
            self._set_volume_state(volume_id, "error", reason=f"create failed: {failure}")

        # Keyed on the snapshot too, so a DeleteSnapshot queues behind the restore.
        keys = [volume_id, snapshot_id] if snapshot_id else [volume_id]
        self.tasks.submit(keys, work, f"create {volume_id}", on_failure=failed)

    def _set_status_reason(self, volume_id: str, reason: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE volumes SET status_reason=? WHERE id=?", (reason, volume_id))

    def _set_volume_state(self, volume_id: str, state: str, reason: str | None = None) -> None:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE volumes SET state=?, status_reason=? WHERE id=?",
                (state, reason, volume_id),
            )

    def describe_volumes(
        self, volume_ids: Sequence[str] = (), filters: Sequence[Filter] = (), dry_run: bool = False
    ) -> list[Volume]:
        check_filters(filters, VOLUME_FILTERS)
        for volume_id in volume_ids:
            ids.check(ids.VOLUME, volume_id)
        with self.store.transaction() as db:
            volumes = self._volumes(db, volume_ids or None)
        if volume_ids:
            found = {volume.id for volume in volumes}
            missing = [volume_id for volume_id in volume_ids if volume_id not in found]
            if missing:
                raise errors.InvalidVolumeNotFound(", ".join(missing))
        _dry_run(dry_run)
        return [
            volume
            for volume in volumes
            if matches(volume_filter_values(volume, self.region.zone_id(volume.zone)), filters)
        ]

    def delete_volume(self, volume_id: str, dry_run: bool = False) -> None:
        with self.store.transaction() as db:
            volume = self._volume(db, volume_id)
            if volume.attachments:
                raise errors.VolumeInUse(
                    f"Volume {volume_id} is currently attached to "
                    f"{volume.attachments[0].instance_id}"
                )
            if volume.state not in ("available", "error"):
                raise errors.IncorrectState(
                    f"The volume '{volume_id}' is '{volume.state}'; only an 'available' or "
                    "'error' volume can be deleted."
                )
            _dry_run(dry_run)
            db.execute("UPDATE volumes SET state='deleting' WHERE id=?", (volume_id,))
        self._submit_delete_volume(volume_id)

    def _submit_delete_volume(self, volume_id: str) -> None:
        def failed(failure: Exception) -> None:
            self._set_volume_state(volume_id, "error", reason=f"delete failed: {failure}")

        def work() -> None:
            try:
                self.backend.delete_volume(volume_id)
            except BackendError as failure:
                failed(failure)
                return
            with self.store.transaction() as db:
                db.execute("DELETE FROM tags WHERE resource_id=?", (volume_id,))
                db.execute("DELETE FROM modifications WHERE volume_id=?", (volume_id,))
                db.execute("DELETE FROM volumes WHERE id=?", (volume_id,))

        self.tasks.submit([volume_id], work, f"delete {volume_id}", on_failure=failed)

    # ---- attachments -----------------------------------------------------

    def attach_volume(
        self, volume_id: str, instance_id: str, device: str, dry_run: bool = False
    ) -> Attachment:
        with self.store.transaction() as db:
            volume = self._volume(db, volume_id)
            instance = self._instance(db, instance_id)
            if not device_names.is_device_name(device):
                raise errors.InvalidParameterValue(
                    f"Value ({device!r}) for parameter device is invalid. It is not a valid EBS "
                    f"device name; {device_names.DEVICE_NAME_HINT}."
                )
            if instance.state != "running":
                raise errors.IncorrectInstanceState(
                    f"The instance '{instance_id}' is not in the 'running' state "
                    f"(it is '{instance.state}')."
                )
            if volume.zone != instance.zone:
                raise errors.InvalidVolumeZoneMismatch(
                    volume_id, volume.zone, instance_id, instance.zone
                )
            if any(a.instance_id == instance_id for a in volume.attachments):
                raise errors.VolumeInUse(f"{volume_id} is already attached to an instance")
            if volume.attachments and not volume.multi_attach:
                raise errors.VolumeInUse(
                    f"{volume_id} is already attached to an instance "
                    f"({volume.attachments[0].instance_id})"
                )
            if volume.multi_attach and len(volume.attachments) >= rules.MAX_MULTI_ATTACH_INSTANCES:
                raise errors.AttachmentLimitExceeded(
                    f"Volume {volume_id} is attached to {len(volume.attachments)} instances, "
                    f"the Multi-Attach maximum."
                )
            if volume.state not in ("available", "in-use"):
                raise errors.IncorrectState(
                    f"Volume '{volume_id}' is in the '{volume.state}' state; it can be attached "
                    "once it is 'available'."
                )
            slot = device_names.canonical_device(device)
            if any(device_names.canonical_device(a.device) == slot for a in instance.attachments):
                raise errors.InvalidParameterValue(
                    f"Invalid value '{device}' for unixDevice. Attachment point {device} is "
                    "already in use"
                )
            _dry_run(dry_run)
            now = utcnow()
            db.execute(
                "INSERT INTO attachments(volume_id, instance_id, device, state, attach_time) "
                "VALUES (?, ?, ?, 'attaching', ?)",
                (volume_id, instance_id, device, to_text(now)),
            )
            db.execute("UPDATE volumes SET state='in-use' WHERE id=?", (volume_id,))
        self._submit_attach(volume_id, instance_id)
        return Attachment(volume_id, instance_id, device, "attaching", now)

    def _submit_attach(self, volume_id: str, instance_id: str) -> None:
        def work() -> None:
            with self.store.transaction() as db:
                row = db.execute(
                    "SELECT a.device, a.state, i.is_host FROM attachments a "
                    "JOIN instances i ON i.id = a.instance_id "
                    "WHERE a.volume_id=? AND a.instance_id=?",
                    (volume_id, instance_id),
                ).fetchone()
            if row is None or row["state"] != "attaching":
                return
            device_path = None
            if row["is_host"]:
                failpoints.hit("attach.backend")
                try:
                    device_path = self.backend.attach_volume(volume_id, row["device"])
                except BackendError as failure:
                    log.warning("attach of %s failed: %s", volume_id, failure)
                    failed(failure)
                    return
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE attachments SET state='attached', device_path=? "
                    "WHERE volume_id=? AND instance_id=?",
                    (device_path, volume_id, instance_id),
                )
                _clear_failure(db, volume_id)

        def failed(failure: Exception) -> None:
            # As EC2 reports an attach that cannot complete: the attachment ends, the
            # volume is available again, and the status events say why.
            with self.store.transaction() as db:
                self._drop_attachment(db, volume_id, instance_id)
                db.execute(
                    "UPDATE volumes SET status_reason=? WHERE id=?",
                    (f"attach to {instance_id} failed: {failure}", volume_id),
                )

        self.tasks.submit(
            [volume_id], work, f"attach {volume_id} to {instance_id}", on_failure=failed
        )

    def _drop_attachment(self, db: sqlite3.Connection, volume_id: str, instance_id: str) -> None:
        db.execute(
            "DELETE FROM attachments WHERE volume_id=? AND instance_id=?", (volume_id, instance_id)
        )
        remaining = db.execute(
            "SELECT COUNT(*) FROM attachments WHERE volume_id=?", (volume_id,)
        ).fetchone()[0]
        if not remaining:
            db.execute(
                "UPDATE volumes SET state='available' WHERE id=? AND state='in-use'", (volume_id,)
            )

    def detach_volume(
        self,
        volume_id: str,
        instance_id: str | None = None,
        device: str | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> Attachment:
        with self.store.transaction() as db:
            volume = self._volume(db, volume_id)
            if instance_id is not None:
                self._instance(db, instance_id)
            if volume.multi_attach and instance_id is None and volume.attachments:
                # "If you are detaching a Multi-Attach enabled volume, you must specify an
                # instance ID."
                raise errors.MissingParameter("InstanceId")
            candidates = [a for a in volume.attachments if instance_id in (None, a.instance_id)]
            if not candidates:
                if instance_id is None:
                    raise errors.IncorrectState(
                        f"Volume '{volume_id}' is in the '{volume.state}' state."
                    )
                raise errors.InvalidAttachmentNotFound(
                    f"Volume {volume_id} can not be detached from {instance_id} because it is "
                    "not attached"
                )
            if len(candidates) > 1:
                raise errors.InvalidParameterCombination(
                    f"Volume {volume_id} is attached to {len(candidates)} instances; name the "
                    "instance to detach it from with InstanceId."
                )
            attachment = candidates[0]
            if device is not None and device != attachment.device:
                raise errors.InvalidAttachmentNotFound(
                    f"The volume {volume_id} is not attached to instance "
                    f"{attachment.instance_id} as device {device}"
                )
            if attachment.state == "detaching" and not force:
                raise errors.IncorrectState(f"Volume '{volume_id}' is already being detached.")
            _dry_run(dry_run)
            db.execute(
                "UPDATE attachments SET state='detaching', force_detach=? "
                "WHERE volume_id=? AND instance_id=?",
                (int(force or attachment.force_detach), volume_id, attachment.instance_id),
            )
            attachment.state = "detaching"
        self._submit_detach(volume_id, attachment.instance_id)
        return attachment

    def _submit_detach(self, volume_id: str, instance_id: str) -> None:
        def work() -> None:
            with self.store.transaction() as db:
                row = db.execute(
                    "SELECT a.state, a.force_detach, a.device_path, i.is_host "
                    "FROM attachments a JOIN instances i ON i.id = a.instance_id "
                    "WHERE a.volume_id=? AND a.instance_id=?",
                    (volume_id, instance_id),
                ).fetchone()
            if row is None or row["state"] != "detaching":
                return
            try:
                if row["is_host"]:
                    self.backend.detach_volume(volume_id, bool(row["force_detach"]))
            except DeviceBusy:
                # As on EBS, a detach of a device still in use waits in 'detaching'
                # until the device is released or the detach is forced.
                raise RetryLater(DETACH_RETRY_SECONDS) from None
            except Exception as failure:
                # As on EBS, a detach that cannot complete stays 'detaching' (a forced
                # detach may still end it); the status events say why.
                log.warning("detach of %s failed, retrying: %r", volume_id, failure)
                self._set_status_reason(volume_id, f"detach from {instance_id} failed: {failure}")
                raise RetryLater(DETACH_RETRY_SECONDS) from None
            with self.store.transaction() as db:
                self._drop_attachment(db, volume_id, instance_id)
                _clear_failure(db, volume_id)

        self.tasks.submit([volume_id], work, f"detach {volume_id} from {instance_id}")

    # ---- modifications ---------------------------------------------------

    def _modifications(self, db: sqlite3.Connection) -> list[Modification]:
        return [
            Modification(
                volume_id=row["volume_id"],
                state=row["state"],
                progress=row["progress"],
                start_time=from_text(row["start_time"]),
                end_time=from_text(row["end_time"]) if row["end_time"] else None,
                original_size=row["original_size"],
                original_type=row["original_type"],
                original_iops=row["original_iops"],
                original_throughput=row["original_throughput"],
                original_multi_attach=bool(row["original_multi_attach"]),
                target_size=row["target_size"],
                target_type=row["target_type"],
                target_iops=row["target_iops"],
                target_throughput=row["target_throughput"],
                target_multi_attach=bool(row["target_multi_attach"]),
                status_message=row["status_message"],
            )
            for row in db.execute(
                "SELECT * FROM modifications m WHERE seq = "
                "(SELECT MAX(seq) FROM modifications WHERE volume_id = m.volume_id)"
            )
        ]

    def modify_volume(
        self, volume_id: str, change: VolumeChange, dry_run: bool = False
    ) -> Modification:
        with self.store.transaction() as db:
            volume = self._volume(db, volume_id)
            if volume.state not in ("available", "in-use"):
                raise errors.IncorrectState(
                    f"Volume '{volume_id}' is in the '{volume.state}' state and cannot be modified."
                )
            current = next((m for m in self._modifications(db) if m.volume_id == volume_id), None)
            if current is not None and current.state in ("modifying", "optimizing"):
                raise errors.IncorrectModificationState(
                    f"Volume {volume_id} is already being modified (state "
                    f"'{current.state}'); wait until the modification completes."
                )
            target_type = change.volume_type or volume.volume_type
            target_size = change.size if change.size is not None else volume.size
            if target_size < volume.size:
                raise errors.InvalidParameterValue(
                    f"New size {target_size}GiB is smaller than the volume's current size "
                    f"{volume.size}GiB; EBS volumes can only grow."
                )
            same_type = target_type == volume.volume_type
            iops = change.iops
            target_rules = rules.volume_type_rules(target_type)
            if iops is None and target_rules.min_iops:
                # Kept if the type stays; 3,000 when changing to gp3, io1 or io2.
                iops = volume.iops if same_type else rules.MODIFY_DEFAULT_IOPS
            throughput = change.throughput
            if throughput is None and same_type and target_type == "gp3":
                throughput = volume.throughput
            multi_attach = (
                change.multi_attach if change.multi_attach is not None else volume.multi_attach
            )
            if multi_attach != volume.multi_attach and volume.attachments:
                raise errors.IncorrectState(
                    f"Multi-Attach can be changed only while {volume_id} is detached."
                )
            if volume.multi_attach:
                # EBS: the type of a Multi-Attach volume stays; io1 keeps its size and IOPS too.
                if target_type != volume.volume_type:
                    raise errors.InvalidParameterValue(
                        f"Volume {volume_id} has Multi-Attach enabled; its volume type cannot "
                        "be modified."
                    )
                if volume.volume_type == "io1" and (
                    target_size != volume.size or (iops is not None and iops != volume.iops)
                ):
                    raise errors.InvalidParameterValue(
                        f"Volume {volume_id} is an io1 volume with Multi-Attach enabled; its "
                        "size and IOPS cannot be modified."
                    )
            performance = rules.check_volume_config(
                target_type, target_size, iops, throughput, multi_attach
            )
            self._check_capacity(target_size)
            if (
                target_size == volume.size
                and target_type == volume.volume_type
                and performance.iops == volume.iops
                and performance.throughput == volume.throughput
                and multi_attach == volume.multi_attach
            ):
                raise errors.InvalidParameterValue(
                    f"The modification would not change volume {volume_id}; give a new size, "
                    "type, IOPS, throughput or Multi-Attach setting."
                )
            self._check_modification_rate(db, volume_id)
            _dry_run(dry_run)
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM modifications WHERE volume_id=?",
                (volume_id,),
            ).fetchone()[0]
            db.execute(
                "INSERT INTO modifications(volume_id, seq, state, progress, start_time, "
                "original_size, original_type, original_iops, original_throughput, "
                "original_multi_attach, target_size, target_type, target_iops, "
                "target_throughput, target_multi_attach) "
                "VALUES (?, ?, 'modifying', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    volume_id,
                    seq,
                    to_text(utcnow()),
                    volume.size,
                    volume.volume_type,
                    volume.iops,
                    volume.throughput,
                    int(volume.multi_attach),
                    target_size,
                    target_type,
                    performance.iops,
                    performance.throughput,
                    int(multi_attach),
                ),
            )
            modification = next(m for m in self._modifications(db) if m.volume_id == volume_id)
        self._submit_modify(volume_id)
        return modification

    def _submit_modify(self, volume_id: str) -> None:
        def set_state(state: str, progress: int, message: str | None = None) -> None:
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE modifications SET state=?, progress=?, status_message=?, "
                    "end_time=CASE WHEN ? IN ('completed','failed') THEN ? END "
                    "WHERE volume_id=? AND seq=(SELECT MAX(seq) FROM modifications "
                    "WHERE volume_id=?)",
                    (state, progress, message, state, to_text(utcnow()), volume_id, volume_id),
                )

        def work() -> None:
            with self.store.transaction() as db:
                modification = next(
                    (m for m in self._modifications(db) if m.volume_id == volume_id), None
                )
            if modification is None or modification.state not in ("modifying", "optimizing"):
                return
            if modification.state == "modifying":
                if modification.target_size > modification.original_size:
                    try:
                        self.backend.resize_volume(volume_id, modification.target_size)
                    except BackendError as failure:
                        set_state("failed", 0, str(failure))
                        return
                with self.store.transaction() as db:
                    db.execute(
                        "UPDATE volumes SET size=?, volume_type=?, iops=?, throughput=?, "
                        "multi_attach=? WHERE id=?",
                        (
                            modification.target_size,
                            modification.target_type,
                            modification.target_iops,
                            modification.target_throughput,
                            int(modification.target_multi_attach),
                            volume_id,
                        ),
                    )
                set_state("optimizing", 50)
            # Optimizing is EBS rebalancing data in the background; the new size is usable.
            wait = self.backend.latency
            if wait and not self.tasks.sleep(wait):
                return
            set_state("completed", 100)

        self.tasks.submit(
            [volume_id],
            work,
            f"modify {volume_id}",
            on_failure=lambda failure: set_state("failed", 0, str(failure)),
        )

    def describe_volumes_modifications(
        self, volume_ids: Sequence[str] = (), filters: Sequence[Filter] = (), dry_run: bool = False
    ) -> list[Modification]:
        check_filters(filters, MODIFICATION_FILTERS)
        with self.store.transaction() as db:
            for volume_id in volume_ids:
                self._volume(db, volume_id)
            found = self._modifications(db)
        _dry_run(dry_run)
        if volume_ids:
            found = [m for m in found if m.volume_id in volume_ids]
            modified = {m.volume_id for m in found}
            for volume_id in volume_ids:
                if volume_id not in modified:
                    raise errors.InvalidVolumeModificationNotFound(volume_id)
        return [m for m in found if matches(modification_filter_values(m), filters)]

    # ---- volume status and attributes -----------------------------------

    def describe_volume_status(
        self, volume_ids: Sequence[str] = (), filters: Sequence[Filter] = (), dry_run: bool = False
    ) -> list[Volume]:
        check_filters(filters, VOLUME_STATUS_FILTERS)
        volumes = self.describe_volumes(volume_ids, (), dry_run)
        return [v for v in volumes if matches(volume_status_filter_values(v), filters)]

    def volume_attribute(self, volume_id: str, attribute: str, dry_run: bool = False) -> Volume:
        if attribute not in ("autoEnableIO", "productCodes"):
            raise errors.InvalidParameterValue(
                f"Value ({attribute}) for parameter attribute is invalid. "
                "Valid attributes: autoEnableIO, productCodes."
            )
        with self.store.transaction() as db:
            volume = self._volume(db, volume_id)
        _dry_run(dry_run)
        return volume

    @staticmethod
    def _check_modification_rate(db: sqlite3.Connection, volume_id: str) -> None:
        """EBS: at most MODIFICATIONS_PER_DAY modifications of a volume in a rolling 24 hours."""
        window_start = utcnow() - MODIFICATION_WINDOW
        recent = sorted(
            from_text(row["start_time"])
            for row in db.execute(
                "SELECT start_time FROM modifications WHERE volume_id=?", (volume_id,)
            )
            if from_text(row["start_time"]) > window_start
        )
        if len(recent) >= MODIFICATIONS_PER_DAY:
            next_allowed = recent[-MODIFICATIONS_PER_DAY] + MODIFICATION_WINDOW
            raise errors.VolumeModificationRateExceeded(
                f"You've reached the maximum modification rate per volume limit: "
                f"{MODIFICATIONS_PER_DAY} modifications in 24 hours. Volume {volume_id} can be "
                f"modified again after {to_text(next_allowed)}."
            )

    def modify_volume_attribute(
        self, volume_id: str, auto_enable_io: bool | None, dry_run: bool = False
    ) -> None:
        with self.store.transaction() as db:
            self._volume(db, volume_id)
            if auto_enable_io is None:
                raise errors.MissingParameter("AutoEnableIO")
            _dry_run(dry_run)
            db.execute(
                "UPDATE volumes SET auto_enable_io=? WHERE id=?", (int(auto_enable_io), volume_id)
            )

    def enable_volume_io(self, volume_id: str, dry_run: bool = False) -> None:
        with self.store.transaction() as db:
            self._volume(db, volume_id)
            _dry_run(dry_run)
            db.execute("UPDATE volumes SET io_enabled=1 WHERE id=?", (volume_id,))

    # ---- snapshots -------------------------------------------------------

    def create_snapshot(
        self,
        volume_id: str,
        description: str = "",
        tag_specs: Sequence[TagSpec] = (),
        dry_run: bool = False,
        extra_tags: Mapping[str, str] | None = None,
    ) -> Snapshot:
        tags = dict(extra_tags or {})
        tags.update(_tags_for(tag_specs, "snapshot"))
        with self.store.transaction() as db:
            volume = self._volume(db, volume_id)
            self._check_snapshottable(volume)
            _dry_run(dry_run)
            snapshot = self._insert_snapshot(db, volume, description, tags)
        self._submit_create_snapshot(snapshot.id, volume_id)
        return snapshot

    @staticmethod
    def _check_snapshottable(volume: Volume) -> None:
        if volume.state not in ("available", "in-use"):
            raise errors.IncorrectState(
                f"Volume '{volume.id}' is in the '{volume.state}' state; snapshot an "
                "'available' or 'in-use' volume."
            )

    def _insert_snapshot(
        self, db: sqlite3.Connection, volume: Volume, description: str, tags: Mapping[str, str]
    ) -> Snapshot:
        self._check_snapshottable(volume)
        snapshot_id = ids.new_id(ids.SNAPSHOT)
        db.execute(
            "INSERT INTO snapshots(id, volume_id, volume_size, state, progress, start_time, "
            "description, encrypted, kms_key_id) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
            (
                snapshot_id,
                volume.id,
                volume.size,
                to_text(utcnow()),
                description,
                int(volume.encrypted),
                volume.kms_key_id,
            ),
        )
        self._set_tags(db, snapshot_id, "snapshot", tags)
        return self._snapshot(db, snapshot_id)

    def _progress_recorder(self, snapshot_id: str) -> Callable[[int], None]:
        last_time = 0.0

        def record(percent: int) -> None:
            # At most a few commits a second: each is an fsync of the state store.
            nonlocal last_time
            now = time.monotonic()
            if now - last_time < PROGRESS_INTERVAL:
                return
            last_time = now
            percent = max(0, min(99, percent))
            try:
                with self.store.transaction() as db:
                    db.execute(
                        "UPDATE snapshots SET progress=? WHERE id=? AND state='pending'",
                        (percent, snapshot_id),
                    )
            except sqlite3.OperationalError as failure:
                # Progress is informational; a full disk must not fail the copy itself.
                log.warning("cannot record progress of %s: %s", snapshot_id, failure)

        return record

    def _finish_snapshot(self, snapshot_id: str, failure: Exception | None) -> None:
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT delete_requested FROM snapshots WHERE id=?", (snapshot_id,)
            ).fetchone()
            if row is not None and row["delete_requested"]:
                self._remove_snapshot(db, snapshot_id)
            elif failure is None:
                db.execute(
                    "UPDATE snapshots SET state='completed', progress=100, completion_time=? "
                    "WHERE id=?",
                    (to_text(utcnow()), snapshot_id),
                )
            else:
                db.execute(
                    "UPDATE snapshots SET state='error', state_message=? WHERE id=?",
                    (str(failure), snapshot_id),
                )
        if row is not None and row["delete_requested"]:
            self._submit_empty_trash(snapshot_id)

    def _submit_snapshot_data(
        self,
        snapshot_id: str,
        keys: Sequence[str],
        capture: Callable[[Callable[[int], None]], None],
        what: str,
    ) -> None:
        """Run the backend's copy for `snapshot_id`, then record completed or error."""

        def work() -> None:
            try:
                capture(self._progress_recorder(snapshot_id))
            except BackendError as failure:
                self._finish_snapshot(snapshot_id, failure)
            else:
                self._finish_snapshot(snapshot_id, None)

        self.tasks.submit(
            keys, work, what, on_failure=lambda failure: self._finish_snapshot(snapshot_id, failure)
        )

    def _submit_create_snapshot(self, snapshot_id: str, volume_id: str) -> None:
        self._submit_snapshot_data(
            snapshot_id,
            [volume_id, snapshot_id],
            lambda progress: self.backend.create_snapshot(snapshot_id, volume_id, progress),
            f"snapshot {volume_id}",
        )

    def create_snapshots(
        self,
        instance_id: str,
        exclude_boot_volume: bool = False,
        exclude_volume_ids: Sequence[str] = (),
        description: str = "",
        tag_specs: Sequence[TagSpec] = (),
        copy_tags_from_source: bool = False,
        dry_run: bool = False,
    ) -> list[Snapshot]:
        with self.store.transaction() as db:
            instance = self._instance(db, instance_id)
            for volume_id in exclude_volume_ids:
                self._volume(db, volume_id)
            volumes = {
                v.id: v for v in self._volumes(db, [a.volume_id for a in instance.attachments])
            }
            for volume in volumes.values():
                if volume.id not in exclude_volume_ids:
                    self._check_snapshottable(volume)
            requested = _tags_for(tag_specs, "snapshot")
            _dry_run(dry_run)
            snapshots = []
            # fakestor instances have no boot volume, so ExcludeBootVolume changes nothing.
            for attachment in instance.attachments:
                if attachment.volume_id in exclude_volume_ids:
                    continue
                volume = volumes[attachment.volume_id]
                tags = {**(volume.tags if copy_tags_from_source else {}), **requested}
                snapshots.append(self._insert_snapshot(db, volume, description, tags))
        # Only once every snapshot is recorded: a refused request starts no work.
        for snapshot in snapshots:
            self._submit_create_snapshot(snapshot.id, snapshot.volume_id)
        return snapshots

    def copy_snapshot(
        self,
        source_snapshot_id: str,
        source_region: str,
        description: str | None = None,
        encrypted: bool | None = None,
        kms_key_id: str | None = None,
        tag_specs: Sequence[TagSpec] = (),
        dry_run: bool = False,
    ) -> Snapshot:
        tags = _tags_for(tag_specs, "snapshot")
        if source_region != self.region.name:
            raise errors.InvalidParameterValue(
                f"Value ({source_region}) for parameter SourceRegion is invalid: this fakestor "
                f"serves only {self.region.name}."
            )
        with self.store.transaction() as db:
            source = self._snapshot(db, source_snapshot_id)
            if source.state != "completed":
                raise errors.IncorrectState(
                    f"Snapshot '{source.id}' is in invalid state - {source.state}"
                )
            if kms_key_id is not None and not (encrypted or source.encrypted):
                raise errors.InvalidParameterDependency("KmsKeyId", "Encrypted")
            if source.encrypted and encrypted is False:
                raise errors.InvalidParameterCombination(
                    f"Snapshot {source.id} is encrypted; its copy must be encrypted too."
                )
            is_encrypted = bool(encrypted) or source.encrypted or self.encryption_by_default()
            if is_encrypted:
                kms_key_id = kms_key_id or source.kms_key_id or self.region.default_kms_key_id
            _dry_run(dry_run)
            snapshot_id = ids.new_id(ids.SNAPSHOT)
            db.execute(
                "INSERT INTO snapshots(id, volume_id, volume_size, state, progress, start_time, "
                "description, encrypted, kms_key_id, source_snapshot_id) "
                "VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)",
                (
                    snapshot_id,
                    source.volume_id,
                    source.volume_size,
                    to_text(utcnow()),
                    description
                    if description is not None
                    else f"[Copied {source.id} from {source_region}] {source.description}",
                    int(is_encrypted),
                    kms_key_id,
                    source.id,
                ),
            )
            self._set_tags(db, snapshot_id, "snapshot", tags)
            snapshot = self._snapshot(db, snapshot_id)
        self._submit_copy_snapshot(source_snapshot_id, snapshot_id)
        return snapshot

    def _submit_copy_snapshot(self, source_snapshot_id: str, snapshot_id: str) -> None:
        self._submit_snapshot_data(
            snapshot_id,
            [source_snapshot_id, snapshot_id],
            lambda progress: self.backend.copy_snapshot(source_snapshot_id, snapshot_id, progress),
            f"copy {source_snapshot_id}",
        )

    def describe_snapshots(
        self,
        snapshot_ids: Sequence[str] = (),
        owner_ids: Sequence[str] = (),
        restorable_by: Sequence[str] = (),
        filters: Sequence[Filter] = (),
        dry_run: bool = False,
    ) -> list[Snapshot]:
        check_filters(filters, SNAPSHOT_FILTERS)
        for snapshot_id in snapshot_ids:
            ids.check(ids.SNAPSHOT, snapshot_id)
        with self.store.transaction() as db:
            snapshots = self._snapshots(db, snapshot_ids or None)
        if snapshot_ids:
            found = {s.id for s in snapshots}
            missing = [s for s in snapshot_ids if s not in found]
            if missing:
                raise errors.InvalidSnapshotNotFound(", ".join(missing))
        _dry_run(dry_run)
        account = self.region.account_id
        if owner_ids and not any(owner in ("self", account) for owner in owner_ids):
            # Every snapshot here is owned by this account; "amazon" and others own none.
            return []
        if restorable_by:
            snapshots = [
                s
                for s in snapshots
                if s.public
                or any(user in ("self", account) or user in s.shared_with for user in restorable_by)
            ]
        return [s for s in snapshots if matches(snapshot_filter_values(s), filters)]

    def delete_snapshot(self, snapshot_id: str, dry_run: bool = False) -> None:
        with self.store.transaction() as db:
            snapshot = self._snapshot(db, snapshot_id)
            _dry_run(dry_run)
            if snapshot.state == "pending":
                # EBS accepts the delete and carries it out once the snapshot completes;
                # until then it stays visible as `pending`.
                db.execute("UPDATE snapshots SET delete_requested=1 WHERE id=?", (snapshot_id,))
                return
            self._remove_snapshot(db, snapshot_id)
        self._submit_empty_trash(snapshot_id)

    @staticmethod
    def _remove_snapshot(db: sqlite3.Connection, snapshot_id: str) -> None:
        db.execute("DELETE FROM snapshot_permissions WHERE snapshot_id=?", (snapshot_id,))
        db.execute("DELETE FROM tags WHERE resource_id=?", (snapshot_id,))
        db.execute("DELETE FROM snapshots WHERE id=?", (snapshot_id,))
        # The data goes in the background; the trash row carries that across a crash.
        db.execute("INSERT OR IGNORE INTO trash VALUES ('snapshot', ?)", (snapshot_id,))

    def _submit_empty_trash(self, snapshot_id: str) -> None:
        def work() -> None:
            try:
                self.backend.delete_snapshot(snapshot_id)
            except BackendError as failure:
                log.warning("deleting the data of %s failed: %s", snapshot_id, failure)
                return
            with self.store.transaction() as db:
                db.execute(
                    "DELETE FROM trash WHERE kind='snapshot' AND resource_id=?", (snapshot_id,)
                )

        # Volumes restored from it keep their own copy of the data, as on EBS.
        self.tasks.submit([snapshot_id], work, f"delete {snapshot_id}")

    def snapshot_attribute(
        self, snapshot_id: str, attribute: str, dry_run: bool = False
    ) -> Snapshot:
        if attribute not in ("createVolumePermission", "productCodes"):
            raise errors.InvalidParameterValue(
                f"Value ({attribute}) for parameter attribute is invalid. "
                "Valid attributes: createVolumePermission, productCodes."
            )
        with self.store.transaction() as db:
            snapshot = self._snapshot(db, snapshot_id)
        _dry_run(dry_run)
        return snapshot

    def modify_snapshot_permission(
        self,
        snapshot_id: str,
        add: Iterable[tuple[str, str]],
        remove: Iterable[tuple[str, str]],
        dry_run: bool = False,
    ) -> None:
        """Grant or revoke createVolumePermission; grantees are ("user", id) or ("group", "all")."""
        add, remove = list(add), list(remove)
        for kind, grantee in add + remove:
            if kind == "group" and grantee != "all":
                raise errors.InvalidParameterValue(
                    f"Value ({grantee}) for parameter UserGroup is invalid. Only 'all' is valid."
                )
            if kind == "user" and not re.fullmatch(r"[0-9]{12}", grantee):
                raise errors.InvalidParameterValue(
                    f"Value ({grantee}) for parameter UserId is invalid. "
                    "Expected a 12-digit AWS account id."
                )
        if not add and not remove:
            raise errors.MissingParameter("CreateVolumePermission (Add or Remove)")
        with self.store.transaction() as db:
            snapshot = self._snapshot(db, snapshot_id)
            if snapshot.encrypted and ("group", "all") in add:
                raise errors.OperationNotPermitted(
                    f"Encrypted snapshot {snapshot_id} cannot be made public."
                )
            _dry_run(dry_run)
            db.executemany(
                "INSERT OR IGNORE INTO snapshot_permissions VALUES (?, ?, ?)",
                [(snapshot_id, kind, grantee) for kind, grantee in add],
            )
            db.executemany(
                "DELETE FROM snapshot_permissions WHERE snapshot_id=? AND grantee_kind=? "
                "AND grantee=?",
                [(snapshot_id, kind, grantee) for kind, grantee in remove],
            )

    def reset_snapshot_permission(self, snapshot_id: str, dry_run: bool = False) -> None:
        with self.store.transaction() as db:
            self._snapshot(db, snapshot_id)
            _dry_run(dry_run)
            db.execute("DELETE FROM snapshot_permissions WHERE snapshot_id=?", (snapshot_id,))

    # ---- tags ------------------------------------------------------------

    def _resource_type(self, db: sqlite3.Connection, resource_id: str) -> str:
        kind = ids.kind_of(resource_id)
        if kind is None or kind not in _RESOURCE_TYPES:
            raise errors.InvalidId(resource_id)
        if kind == ids.VOLUME:
            self._volume(db, resource_id)
        elif kind == ids.SNAPSHOT:
            self._snapshot(db, resource_id)
        else:
            self._instance(db, resource_id)
        return _RESOURCE_TYPES[kind]

    def create_tags(
        self, resource_ids: Sequence[str], tags: Mapping[str, str], dry_run: bool = False
    ) -> None:
        if not resource_ids:
            raise errors.MissingParameter("ResourceId")
        check_tags(tags)
        with self.store.transaction() as db:
            types = {rid: self._resource_type(db, rid) for rid in resource_ids}
            _dry_run(dry_run)
            for resource_id, resource_type in types.items():
                self._set_tags(db, resource_id, resource_type, tags)

    def delete_tags(
        self,
        resource_ids: Sequence[str],
        tags: Sequence[tuple[str, str | None]],
        dry_run: bool = False,
    ) -> None:
        """Delete tags; a None value deletes the key whatever its value, no tags deletes all."""
        if not resource_ids:
            raise errors.MissingParameter("ResourceId")
        with self.store.transaction() as db:
            for resource_id in resource_ids:
                self._resource_type(db, resource_id)
            _dry_run(dry_run)
            for resource_id in resource_ids:
                if not tags:
                    db.execute("DELETE FROM tags WHERE resource_id=?", (resource_id,))
                for key, value in tags:
                    if value is None:
                        db.execute(
                            "DELETE FROM tags WHERE resource_id=? AND key=?", (resource_id, key)
                        )
                    else:
                        db.execute(
                            "DELETE FROM tags WHERE resource_id=? AND key=? AND value=?",
                            (resource_id, key, value),
                        )

    def describe_tags(self, filters: Sequence[Filter] = (), dry_run: bool = False) -> list[Tag]:
        check_filters(filters, TAG_FILTERS)
        _dry_run(dry_run)
        with self.store.transaction() as db:
            rows = db.execute("SELECT * FROM tags").fetchall()
        found = [Tag(r["resource_id"], r["resource_type"], r["key"], r["value"]) for r in rows]
        return [
            tag
            for tag in found
            if matches(
                {
                    "resource-id": [tag.resource_id],
                    "resource-type": [tag.resource_type],
                    "key": [tag.key],
                    "value": [tag.value],
                    f"tag:{tag.key}": [tag.value],
                },
                filters,
            )
        ]

    # ---- account settings ------------------------------------------------

    def encryption_by_default(self) -> bool:
        return self.store.get_setting("ebs_encryption_by_default") == "true"

    def set_encryption_by_default(self, enabled: bool, dry_run: bool = False) -> bool:
        _dry_run(dry_run)
        self.store.set_setting("ebs_encryption_by_default", "true" if enabled else "false")
        return enabled

    # ---- instances -------------------------------------------------------

    def run_instances(
        self,
        image_id: str,
        min_count: int,
        max_count: int,
        instance_type: str | None,
        zone: str | None,
        tag_specs: Sequence[TagSpec] = (),
        dry_run: bool = False,
    ) -> list[Instance]:
        if not image_id.startswith("ami-"):
            raise errors.InvalidParameterValue(f'Invalid id: "{image_id}" (expecting "ami-...")')
        if min_count < 1 or max_count < min_count:
            raise errors.InvalidParameterValue(
                "MinCount must be at least 1 and MaxCount at least MinCount."
            )
        if max_count > 20:
            raise errors.InvalidParameterValue(
                f"Value ({max_count}) for parameter maxCount is invalid: fakestor launches at "
                "most 20 instances per request."
            )
        zone = self.check_zone(zone) if zone else self.region.zones[0]
        tags = _tags_for(tag_specs, "instance")
        _dry_run(dry_run)
        launched = []
        reservation_id = ids.new_id(ids.RESERVATION)
        with self.store.transaction() as db:
            for launch_index in range(max_count):
                instance_id = ids.new_id(ids.INSTANCE)
                db.execute(
                    "INSERT INTO instances(id, zone, state, instance_type, image_id, "
                    "launch_time, reservation_id, launch_index) "
                    "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
                    (
                        instance_id,
                        zone,
                        instance_type or "m5.large",
                        image_id,
                        to_text(utcnow()),
                        reservation_id,
                        launch_index,
                    ),
                )
                self._set_tags(db, instance_id, "instance", tags)
                launched.append(instance_id)
            instances = sorted(
                (i for i in self._instances(db) if i.id in launched), key=lambda i: i.launch_index
            )
        for instance_id in launched:
            self._submit_launch(instance_id)
        return instances

    def _submit_launch(self, instance_id: str) -> None:
        def work() -> None:
            wait = self.backend.latency
            if wait and not self.tasks.sleep(wait):
                return
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE instances SET state='running' WHERE id=? AND state='pending'",
                    (instance_id,),
                )

        def failed(failure: Exception) -> None:
            with self.store.transaction() as db:
                db.execute(
                    "UPDATE instances SET state='terminated' WHERE id=? AND state='pending'",
                    (instance_id,),
                )

        self.tasks.submit([instance_id], work, f"launch {instance_id}", on_failure=failed)

    def describe_instances(
        self,
        instance_ids: Sequence[str] = (),
        filters: Sequence[Filter] = (),
        dry_run: bool = False,
    ) -> list[Instance]:
        check_filters(filters, INSTANCE_FILTERS)
        with self.store.transaction() as db:
            for instance_id in instance_ids:
                self._instance(db, instance_id)
            instances = self._instances(db)
        _dry_run(dry_run)
        if instance_ids:
            instances = [i for i in instances if i.id in instance_ids]
        return [i for i in instances if matches(instance_filter_values(i), filters)]

    def terminate_instances(
        self, instance_ids: Sequence[str], dry_run: bool = False
    ) -> list[tuple[Instance, str]]:
        """Start terminating; returns each instance with its previous state."""
        if not instance_ids:
            raise errors.MissingParameter("InstanceId")
        changes = []
        with self.store.transaction() as db:
            instances = [self._instance(db, instance_id) for instance_id in instance_ids]
            for instance in instances:
                if instance.is_host:
                    raise errors.OperationNotPermitted(
                        f"The instance '{instance.id}' is the machine fakestor runs on and "
                        "cannot be terminated."
                    )
            _dry_run(dry_run)
            for instance in instances:
                previous = instance.state
                if previous != "terminated":
                    instance.state = "shutting-down"
                    db.execute(
                        "UPDATE instances SET state='shutting-down' WHERE id=?", (instance.id,)
                    )
                changes.append((instance, previous))
        for instance, previous in changes:
            if previous != "terminated":
                self._submit_terminate(instance.id)
        return changes

    def _submit_terminate(self, instance_id: str) -> None:
        def work() -> None:
            with self.store.transaction() as db:
                attachments = [
                    self._attachment(row)
                    for row in db.execute(
                        "SELECT * FROM attachments WHERE instance_id=?", (instance_id,)
                    )
                ]
                # Non-host instances have no devices: their attachments just end.
                for attachment in attachments:
                    self._drop_attachment(db, attachment.volume_id, instance_id)
                doomed = [a.volume_id for a in attachments if a.delete_on_termination]
                for volume_id in doomed:
                    db.execute(
                        "UPDATE volumes SET state='deleting' WHERE id=? AND state='available'",
                        (volume_id,),
                    )
                db.execute("UPDATE instances SET state='terminated' WHERE id=?", (instance_id,))
            for volume_id in doomed:
                self._submit_delete_volume(volume_id)

        self.tasks.submit([instance_id], work, f"terminate {instance_id}")
