"""What each resource offers to EC2 filters: filter name -> the resource's values."""

from __future__ import annotations

from fakestor.control.filters import tag_values
from fakestor.control.resources import Instance, Modification, Snapshot, Volume, to_wire_time

VOLUME_FILTERS = (
    "attachment.attach-time",
    "attachment.delete-on-termination",
    "attachment.device",
    "attachment.instance-id",
    "attachment.status",
    "availability-zone",
    "availability-zone-id",
    "create-time",
    "encrypted",
    "multi-attach-enabled",
    "fast-restored",
    "operator.managed",
    "operator.principal",
    "size",
    "snapshot-id",
    "status",
    "tag-key",
    "tag-value",
    "volume-id",
    "volume-type",
)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def volume_filter_values(volume: Volume, zone_id: str) -> dict[str, list[str]]:
    values = tag_values(volume.tags)
    values.update(
        {
            "attachment.attach-time": [to_wire_time(a.attach_time) for a in volume.attachments],
            "attachment.delete-on-termination": [
                _flag(a.delete_on_termination) for a in volume.attachments
            ],
            "attachment.device": [a.device for a in volume.attachments],
            "attachment.instance-id": [a.instance_id for a in volume.attachments],
            "attachment.status": [a.state for a in volume.attachments],
            "availability-zone": [volume.zone],
            "availability-zone-id": [zone_id],
            "create-time": [to_wire_time(volume.create_time)],
            "encrypted": [_flag(volume.encrypted)],
            "multi-attach-enabled": [_flag(volume.multi_attach)],
            "fast-restored": [str(volume.fast_restored).lower()],
            # No volume here is managed by another AWS service.
            "operator.managed": ["false"],
            "operator.principal": [],
            "size": [str(volume.size)],
            "snapshot-id": [volume.snapshot_id or ""],
            "status": [volume.state],
            "volume-id": [volume.id],
            "volume-type": [volume.volume_type],
        }
    )
    return values


def volume_status(volume: Volume) -> str:
    if volume.state == "creating":
        return "insufficient-data"
    if volume.state == "error" or not volume.io_enabled:
        return "impaired"
    return "ok"


# Status events of an injected impairment start with this (control/faults.py sets them).
INCONSISTENCY = "Potential data inconsistency"


def status_event_type(volume: Volume) -> str | None:
    """The type of the volume's status event, if it has one: its I/O disabled (or
    re-enabled after an injected impairment), or its last operation failed."""
    if not volume.status_reason:
        return None
    if volume_status(volume) == "impaired" or volume.status_reason.startswith(INCONSISTENCY):
        return "potential-data-inconsistency"
    return "fakestor:operation-failed"


def status_event_id(volume: Volume) -> str:
    return "evol-" + volume.id.removeprefix("vol-")


VOLUME_STATUS_FILTERS = (
    "action.code",
    "action.description",
    "action.event-id",
    "attachment-status.instance-id",
    "attachment-status.io-performance",
    "availability-zone",
    "event.description",
    "event.event-id",
    "event.event-type",
    "event.not-after",
    "event.not-before",
    "volume-status.details-name",
    "volume-status.details-status",
    "volume-status.status",
)


def io_performance(volume: Volume) -> str:
    """Reported for provisioned-IOPS volumes only, as EC2 does (volume_metrics.io_performance)."""
    if volume.volume_type not in ("io1", "io2"):
        return "not-applicable"
    return volume.io_performance or "normal"


def volume_status_filter_values(volume: Volume) -> dict[str, list[str]]:
    provisioned = volume.volume_type in ("io1", "io2")
    event_type = status_event_type(volume)
    event = event_type is not None
    action = event and not volume.io_enabled
    return {
        # fakestor raises no scheduled events: not-before and not-after match nothing.
        "action.code": ["enable-volume-io"] if action else [],
        "action.description": ["Enable volume I/O"] if action else [],
        "action.event-id": [status_event_id(volume)] if action else [],
        "attachment-status.instance-id": (
            [a.instance_id for a in volume.attachments] if provisioned else []
        ),
        "attachment-status.io-performance": (
            [io_performance(volume)] * len(volume.attachments) if provisioned else []
        ),
        "availability-zone": [volume.zone],
        "event.description": [volume.status_reason or ""] if event else [],
        "event.event-id": [status_event_id(volume)] if event else [],
        "event.event-type": [event_type] if event_type else [],
        "event.not-after": [],
        "event.not-before": [],
        "volume-status.details-name": ["io-enabled", "io-performance"]
        + (["initialization-state"] if volume.initialization else []),
        "volume-status.details-status": [
            "passed" if volume.io_enabled else "failed",
            io_performance(volume),
        ]
        + ([str(volume.initialization.state)] if volume.initialization else []),
        "volume-status.status": [volume_status(volume)],
    }


MODIFICATION_FILTERS = (
    "modification-state",
    "original-iops",
    "original-size",
    "original-volume-type",
    "originalMultiAttachEnabled",
    "start-time",
    "target-iops",
    "target-size",
    "target-volume-type",
    "targetMultiAttachEnabled",
    "target-throughput",
    "volume-id",
)


def modification_filter_values(m: Modification) -> dict[str, list[str]]:
    return {
        "modification-state": [m.state],
        "original-iops": [str(m.original_iops or "")],
        "original-size": [str(m.original_size)],
        "original-volume-type": [m.original_type],
        "originalMultiAttachEnabled": [_flag(m.original_multi_attach)],
        "start-time": [to_wire_time(m.start_time)],
        "target-iops": [str(m.target_iops or "")],
        "target-size": [str(m.target_size)],
        "target-volume-type": [m.target_type],
        "targetMultiAttachEnabled": [_flag(m.target_multi_attach)],
        "target-throughput": [str(m.target_throughput or "")],
        "volume-id": [m.volume_id],
    }


SNAPSHOT_FILTERS = (
    "description",
    "encrypted",
    "owner-alias",
    "owner-id",
    "progress",
    "snapshot-id",
    "start-time",
    "status",
    "storage-tier",
    "transfer-type",
    "tag-key",
    "tag-value",
    "volume-id",
    "volume-size",
)


def snapshot_filter_values(snapshot: Snapshot) -> dict[str, list[str]]:
    values = tag_values(snapshot.tags)
    values.update(
        {
            "description": [snapshot.description],
            "encrypted": [_flag(snapshot.encrypted)],
            "owner-alias": [],
            "owner-id": [snapshot.owner_id],
            "progress": [f"{snapshot.progress}%"],
            "snapshot-id": [snapshot.id],
            "start-time": [to_wire_time(snapshot.start_time)],
            "status": [snapshot.state],
            "storage-tier": ["standard"],
            # Set for copies only; fakestor copies are all standard (no completion duration).
            "transfer-type": ["standard"] if snapshot.source_snapshot_id else [],
            "volume-id": [snapshot.volume_id],
            "volume-size": [str(snapshot.volume_size)],
        }
    )
    return values


TAG_FILTERS = ("key", "resource-id", "resource-type", "value")

INSTANCE_FILTERS = (
    "availability-zone",
    "block-device-mapping.device-name",
    "block-device-mapping.volume-id",
    "image-id",
    "instance-id",
    "instance-state-name",
    "instance-type",
    "tag-key",
    "tag-value",
)


def instance_filter_values(instance: Instance) -> dict[str, list[str]]:
    values = tag_values(instance.tags)
    values.update(
        {
            "availability-zone": [instance.zone],
            "block-device-mapping.device-name": [a.device for a in instance.attachments],
            "block-device-mapping.volume-id": [a.volume_id for a in instance.attachments],
            "image-id": [instance.image_id],
            "instance-id": [instance.id],
            "instance-state-name": [instance.state],
            "instance-type": [instance.instance_type],
        }
    )
    return values
