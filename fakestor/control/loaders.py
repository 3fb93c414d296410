"""Row loaders: records of the state store as resources, and get-or-NotFound by id."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from fakestor import errors, ids
from fakestor.control.resources import (
    Attachment,
    Initialization,
    Instance,
    Modification,
    Snapshot,
    Volume,
    from_text,
)
from fakestor.control.states import (
    AttachmentState,
    InitializationState,
    InstanceState,
    ModificationState,
    SnapshotState,
    VolumeState,
)


def tags_of(
    db: sqlite3.Connection, resource_type: str, resource_ids: Sequence[str] | None = None
) -> dict[str, dict[str, str]]:
    """Tags by resource id: of every resource of the type, or only of `resource_ids`."""
    tags: dict[str, dict[str, str]] = {}
    if resource_ids is None:
        rows = db.execute(
            "SELECT resource_id, key, value FROM tags WHERE resource_type=?", (resource_type,)
        )
    else:
        marks = ",".join("?" * len(resource_ids))
        rows = db.execute(
            f"SELECT resource_id, key, value FROM tags WHERE resource_id IN ({marks})",
            resource_ids,
        )
    for row in rows:
        tags.setdefault(row["resource_id"], {})[row["key"]] = row["value"]
    return tags


def attachment_from_row(row: sqlite3.Row) -> Attachment:
    return Attachment(
        volume_id=row["volume_id"],
        instance_id=row["instance_id"],
        device=row["device"],
        state=AttachmentState(row["state"]),
        attach_time=from_text(row["attach_time"]),
        delete_on_termination=bool(row["delete_on_termination"]),
        device_path=row["device_path"],
        force_detach=bool(row["force_detach"]),
    )


def attachments_by_volume(
    db: sqlite3.Connection, volume_ids: Sequence[str] | None = None
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
        found.setdefault(row["volume_id"], []).append(attachment_from_row(row))
    return found


def load_volumes(
    db: sqlite3.Connection,
    volume_ids: Sequence[str] | None = None,
    *,
    in_recycle_bin: bool = False,
) -> list[Volume]:
    """The volumes, or those of `volume_ids`; those in the Recycle Bin only if
    `in_recycle_bin` (to every other use they do not exist until restored)."""
    if volume_ids is None:
        rows = db.execute("SELECT * FROM volumes").fetchall()
    else:
        marks = ",".join("?" * len(volume_ids))
        rows = db.execute(f"SELECT * FROM volumes WHERE id IN ({marks})", volume_ids).fetchall()
    if not in_recycle_bin:
        binned = {
            row[0]
            for row in db.execute("SELECT resource_id FROM binned_resources WHERE kind='volume'")
        }
        rows = [row for row in rows if row["id"] not in binned]
    # Looking up a few volumes reads only their tags and attachments.
    tags = tags_of(db, "volume", volume_ids)
    attachments = attachments_by_volume(db, volume_ids)
    initializations = initializations_by_volume(db, volume_ids)
    return [
        Volume(
            id=row["id"],
            size=row["size"],
            volume_type=row["volume_type"],
            iops=row["iops"],
            throughput=row["throughput"],
            zone=row["zone"],
            state=VolumeState(row["state"]),
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
            source_volume_id=row["source_volume_id"],
            initialization_rate=row["initialization_rate"],
            fast_restored=bool(row["fast_restored"]),
            initialization=initializations.get(row["id"]),
        )
        for row in rows
    ]


def initializations_by_volume(
    db: sqlite3.Connection, volume_ids: Sequence[str] | None = None
) -> dict[str, Initialization]:
    """The initialization of every volume restored or copied, by volume id."""
    if volume_ids is None:
        rows = db.execute("SELECT * FROM volume_initializations")
    else:
        marks = ",".join("?" * len(volume_ids))
        rows = db.execute(
            f"SELECT * FROM volume_initializations WHERE volume_id IN ({marks})", volume_ids
        )
    found = {}
    for row in rows:
        state = InitializationState(row["state"])
        if state == InitializationState.COMPLETED:
            progress = 100
        elif not row["total"]:
            progress = 0
        else:  # 100 only once the pass has ended: data written meanwhile adds to `done`
            progress = min(99, row["done"] * 100 // row["total"])
        seconds_left = row["seconds_left"]
        if row["kind"] == "provisioned-rate":
            seconds_left = 0 if state == InitializationState.COMPLETED else seconds_left
        else:
            seconds_left = None  # EC2 estimates only provisioned rates
        found[row["volume_id"]] = Initialization(row["kind"], state, progress, seconds_left)
    return found


def get_volume(db: sqlite3.Connection, volume_id: str) -> Volume:
    ids.check(ids.VOLUME, volume_id)
    found = load_volumes(db, [volume_id])
    if not found:
        raise errors.InvalidVolumeNotFound(volume_id)
    return found[0]


def load_snapshots(
    db: sqlite3.Connection,
    owner_id: str,
    snapshot_ids: Sequence[str] | None = None,
    *,
    others: bool = False,
    in_recycle_bin: bool = False,
) -> list[Snapshot]:
    """The account's snapshots (`owner_id`); with `others`, also those of other accounts
    kept here (the built-in image's root snapshot), which the account cannot see. Those in
    the Recycle Bin only if `in_recycle_bin` (to every other use they do not exist until
    restored)."""
    if snapshot_ids is None:
        rows = db.execute("SELECT * FROM snapshots").fetchall()
    else:
        marks = ",".join("?" * len(snapshot_ids))
        rows = db.execute(f"SELECT * FROM snapshots WHERE id IN ({marks})", snapshot_ids).fetchall()
    if not others:
        rows = [row for row in rows if row["owner_id"] is None]
    if not in_recycle_bin:
        rows = [row for row in rows if row["state"] != SnapshotState.RECOVERABLE]
    tags = tags_of(db, "snapshot")
    grants: dict[str, list[tuple[str, str]]] = {}
    for grant in db.execute("SELECT * FROM snapshot_permissions"):
        grants.setdefault(grant["snapshot_id"], []).append(
            (grant["grantee_kind"], grant["grantee"])
        )
    tiers = {t["snapshot_id"]: t for t in db.execute("SELECT * FROM snapshot_tiers")}
    snapshots = []
    for row in rows:
        granted = grants.get(row["id"], [])
        tier = tiers.get(row["id"])
        snapshots.append(
            Snapshot(
                id=row["id"],
                volume_id=row["volume_id"],
                volume_size=row["volume_size"],
                state=SnapshotState(row["state"]),
                progress=row["progress"],
                start_time=from_text(row["start_time"]),
                completion_time=(
                    from_text(row["completion_time"]) if row["completion_time"] else None
                ),
                description=row["description"],
                encrypted=bool(row["encrypted"]),
                kms_key_id=row["kms_key_id"],
                owner_id=row["owner_id"] or owner_id,
                source_snapshot_id=row["source_snapshot_id"],
                state_message=row["state_message"],
                tags=tags.get(row["id"], {}),
                public=("group", "all") in granted,
                shared_with=sorted(grantee for kind, grantee in granted if kind == "user"),
                storage_tier=tier["storage_tier"] if tier else "standard",
                restore_expiry_time=(
                    from_text(tier["restore_expiry"]) if tier and tier["restore_expiry"] else None
                ),
            )
        )
    return snapshots


def get_snapshot(
    db: sqlite3.Connection, owner_id: str, snapshot_id: str, *, others: bool = False
) -> Snapshot:
    ids.check(ids.SNAPSHOT, snapshot_id)
    found = load_snapshots(db, owner_id, [snapshot_id], others=others)
    if not found:
        raise errors.InvalidSnapshotNotFound(snapshot_id)
    return found[0]


def load_instances(db: sqlite3.Connection) -> list[Instance]:
    tags = tags_of(db, "instance")
    by_instance: dict[str, list[Attachment]] = {}
    for attachment_list in attachments_by_volume(db).values():
        for attachment in attachment_list:
            by_instance.setdefault(attachment.instance_id, []).append(attachment)
    return [
        Instance(
            id=row["id"],
            zone=row["zone"],
            state=InstanceState(row["state"]),
            instance_type=row["instance_type"],
            image_id=row["image_id"],
            launch_time=from_text(row["launch_time"]),
            is_host=bool(row["is_host"]),
            reservation_id=row["reservation_id"] or "r-" + row["id"].removeprefix("i-"),
            launch_index=row["launch_index"],
            tags=tags.get(row["id"], {}),
            attachments=by_instance.get(row["id"], []),
            root_device_name=row["root_device_name"],
            disable_api_termination=bool(row["disable_api_termination"]),
            ephemeral=[(device, name) for device, name in json.loads(row["ephemeral"])],
            state_reason=tuple(json.loads(row["state_reason"])) if row["state_reason"] else None,
        )
        for row in db.execute("SELECT * FROM instances")
    ]


def get_instance(db: sqlite3.Connection, instance_id: str) -> Instance:
    ids.check(ids.INSTANCE, instance_id)
    for instance in load_instances(db):
        if instance.id == instance_id:
            return instance
    raise errors.InvalidInstanceIdNotFound(instance_id)


def load_modifications(db: sqlite3.Connection) -> list[Modification]:
    return [
        Modification(
            volume_id=row["volume_id"],
            state=ModificationState(row["state"]),
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
