"""The volumes of a launch: an image's block-device mappings, overridden by the request's,
each EBS entry a real volume created through the backend and attached to the instance."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping, Sequence

from fakestor import device_names, errors
from fakestor.control import rules, volume_initializations
from fakestor.control.account import resolve_encryption
from fakestor.control.context import Ebs
from fakestor.control.images import Image
from fakestor.control.requests import DeviceMapping
from fakestor.control.resources import to_text, utcnow
from fakestor.control.states import AttachmentState
from fakestor.control.volumes import (
    NewVolume,
    check_capacity,
    insert_volume,
    restorable_snapshot,
)


def resolve_mappings(image: Image, requested: Sequence[DeviceMapping]) -> list[DeviceMapping]:
    """The image's mappings with the request's applied: fields it gives replace the image's,
    NoDevice drops a device, new devices are added."""
    by_device = {device_names.canonical_device(m.device_name): m for m in image.mappings}
    for mapping in requested:
        slot = device_names.canonical_device(mapping.device_name)
        if mapping.no_device:
            by_device.pop(slot, None)
            continue
        base = by_device.get(slot)
        if base is not None and base.ebs and mapping.ebs:
            given = {
                name: value
                for name, value in dataclasses.asdict(mapping).items()
                if value is not None and name not in ("device_name", "ebs", "no_device")
            }
            # The image's device name stays (xvda), however the request spelled it.
            mapping = dataclasses.replace(base, **given)
        by_device[slot] = mapping
    return list(by_device.values())


def _check_device(mapping: DeviceMapping, root_device_name: str) -> None:
    name = mapping.device_name
    if name != root_device_name and not device_names.is_device_name(name):
        raise errors.InvalidBlockDeviceMapping(
            f"Invalid device name {name}; {device_names.DEVICE_NAME_HINT}."
        )
    if mapping.virtual_name is not None and not mapping.virtual_name.startswith("ephemeral"):
        raise errors.InvalidBlockDeviceMapping(
            f"Invalid virtual name {mapping.virtual_name} for {name}; use ephemeral0 to "
            "ephemeral23."
        )


def planned_volume(
    ebs: Ebs, db: sqlite3.Connection, mapping: DeviceMapping, zone: str
) -> NewVolume:
    """The volume an EBS mapping asks for, checked as CreateVolume checks it."""
    size = mapping.volume_size
    snapshot = None
    volume_initializations.check_rate(mapping.initialization_rate, mapping.snapshot_id)
    if mapping.snapshot_id is not None:
        snapshot = restorable_snapshot(ebs, db, mapping.snapshot_id, launch=True)
        if size is None:
            size = snapshot.volume_size
        elif size < snapshot.volume_size:
            raise errors.InvalidBlockDeviceMapping(
                f"Volume of size {size}GB is smaller than snapshot '{snapshot.id}', expect "
                f"size >= {snapshot.volume_size}GB"
            )
    if size is None:
        raise errors.InvalidBlockDeviceMapping(
            f"The block-device mapping of {mapping.device_name} needs Ebs.VolumeSize or "
            "Ebs.SnapshotId."
        )
    volume_type = mapping.volume_type or rules.DEFAULT_VOLUME_TYPE
    performance = rules.check_volume_config(volume_type, size, mapping.iops, mapping.throughput)
    check_capacity(ebs, size)
    encrypted, kms_key_id = resolve_encryption(
        ebs, mapping.encrypted, mapping.kms_key_id, snapshot, "a volume restored from it"
    )
    return NewVolume(
        size, volume_type, performance, zone, mapping.snapshot_id, encrypted, kms_key_id
    )


def plan_launch(
    ebs: Ebs,
    db: sqlite3.Connection,
    image: Image,
    requested: Sequence[DeviceMapping],
    zone: str,
) -> list[tuple[DeviceMapping, NewVolume | None]]:
    """Every device of a launch, with the volume to create for each EBS one."""
    plan: list[tuple[DeviceMapping, NewVolume | None]] = []
    for mapping in resolve_mappings(image, requested):
        _check_device(mapping, image.root_device_name)
        volume = planned_volume(ebs, db, mapping, zone) if mapping.ebs else None
        plan.append((mapping, volume))
    return plan


def record_launch_volumes(
    db: sqlite3.Connection,
    instance_id: str,
    plan: Sequence[tuple[DeviceMapping, NewVolume | None]],
    tags: Mapping[str, str],
    time_scale: float = 1.0,
) -> list[tuple[str, str | None]]:
    """Record the plan's volumes `creating`, attachments `attaching` and instance-store
    devices; the (volume id, snapshot id) of each volume, for the tasks to create."""
    created: list[tuple[str, str | None]] = []
    ephemeral: list[tuple[str, str]] = []
    now = to_text(utcnow())
    for mapping, volume in plan:
        if volume is None:
            if mapping.virtual_name:
                ephemeral.append((mapping.device_name, mapping.virtual_name))
            continue
        volume_id = insert_volume(db, volume, tags)
        if volume.snapshot_id is not None:  # its pass is submitted with its creation
            volume_initializations.begin_restore(
                db, volume_id, volume.zone, volume.snapshot_id, mapping.initialization_rate,
                time_scale,
            )  # fmt: skip
        # EC2 deletes a launch's volumes with the instance unless told otherwise.
        delete = mapping.delete_on_termination is not False
        db.execute(
            "INSERT INTO attachments(volume_id, instance_id, device, state, attach_time, "
            "delete_on_termination) VALUES (?, ?, ?, ?, ?, ?)",
            (volume_id, instance_id, mapping.device_name, AttachmentState.ATTACHING, now, delete),
        )
        created.append((volume_id, volume.snapshot_id))
    db.execute("UPDATE instances SET ephemeral=? WHERE id=?", (json.dumps(ephemeral), instance_id))
    return created
