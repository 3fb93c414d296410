"""Resources as the output shapes of botocore's EC2 model (member names as keys)."""

from __future__ import annotations

from typing import Any

from fakestor.control import Ebs
from fakestor.control.fast_snapshot_restores import USER_INITIATED, FastRestore, FastRestoreError
from fakestor.control.filter_values import (
    io_performance,
    status_event_id,
    status_event_type,
    volume_status,
)
from fakestor.control.instance_types import INSTANCE_TYPES
from fakestor.control.resources import (
    INSTANCE_STATE_CODES,
    Attachment,
    Instance,
    Modification,
    Snapshot,
    Tag,
    Volume,
)
from fakestor.control.snapshot_locks import SnapshotLock
from fakestor.control.snapshot_tiers import TierStatus

Doc = dict[str, Any]


def tag_list(tags: dict[str, str]) -> list[Doc] | None:
    if not tags:
        return None
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def attachment(item: Attachment) -> Doc:
    return {
        "AttachTime": item.attach_time,
        "Device": item.device,
        "InstanceId": item.instance_id,
        "State": item.state,
        "VolumeId": item.volume_id,
        "DeleteOnTermination": item.delete_on_termination,
    }


def volume(item: Volume, zone_id: str) -> Doc:
    return {
        "VolumeId": item.id,
        "Size": item.size,
        "SnapshotId": item.snapshot_id or "",
        "AvailabilityZone": item.zone,
        "AvailabilityZoneId": zone_id,
        "State": item.state,
        "CreateTime": item.create_time,
        "Attachments": [attachment(a) for a in item.attachments],
        "Encrypted": item.encrypted,
        "KmsKeyId": item.kms_key_id,
        "VolumeType": item.volume_type,
        "Iops": item.iops,
        "Throughput": item.throughput,
        "MultiAttachEnabled": item.multi_attach,
        "FastRestored": item.fast_restored,
        "SourceVolumeId": item.source_volume_id,
        "VolumeInitializationRate": item.initialization_rate,
        "Tags": tag_list(item.tags),
    }


def snapshot(item: Snapshot) -> Doc:
    return {
        "SnapshotId": item.id,
        "VolumeId": item.volume_id,
        "State": item.state,
        "StateMessage": item.state_message,
        "StartTime": item.start_time,
        "CompletionTime": item.completion_time,
        "Progress": f"{item.progress}%",
        "OwnerId": item.owner_id,
        "Description": item.description,
        "VolumeSize": item.volume_size,
        "Encrypted": item.encrypted,
        "KmsKeyId": item.kms_key_id,
        "StorageTier": item.storage_tier,
        "RestoreExpiryTime": item.restore_expiry_time,
        "Tags": tag_list(item.tags),
    }


def snapshot_info(item: Snapshot) -> Doc:
    return {
        "SnapshotId": item.id,
        "VolumeId": item.volume_id,
        "State": item.state,
        "StartTime": item.start_time,
        "Progress": f"{item.progress}%",
        "OwnerId": item.owner_id,
        "Description": item.description,
        "VolumeSize": item.volume_size,
        "Encrypted": item.encrypted,
        "Tags": tag_list(item.tags),
    }


def modification(item: Modification) -> Doc:
    return {
        "VolumeId": item.volume_id,
        "ModificationState": item.state,
        "StatusMessage": item.status_message,
        "TargetSize": item.target_size,
        "TargetIops": item.target_iops,
        "TargetVolumeType": item.target_type,
        "TargetThroughput": item.target_throughput,
        "TargetMultiAttachEnabled": item.target_multi_attach,
        "OriginalSize": item.original_size,
        "OriginalIops": item.original_iops,
        "OriginalVolumeType": item.original_type,
        "OriginalThroughput": item.original_throughput,
        "OriginalMultiAttachEnabled": item.original_multi_attach,
        "Progress": item.progress,
        "StartTime": item.start_time,
        "EndTime": item.end_time,
    }


def _status_events(item: Volume) -> tuple[list[Doc], list[Doc]]:
    """The volume's last failure as a status event; EBS's action if its I/O is disabled."""
    event_type = status_event_type(item)
    if event_type is None:
        return [], []
    event_id = status_event_id(item)
    events = [{"EventId": event_id, "EventType": event_type, "Description": item.status_reason}]
    actions = []
    if not item.io_enabled:
        actions.append(
            {
                "Code": "enable-volume-io",
                "Description": "Enable volume I/O",
                "EventId": event_id,
                "EventType": event_type,
            }
        )
    return events, actions


def volume_status_item(item: Volume) -> Doc:
    performance = io_performance(item)
    events, actions = _status_events(item)
    details = [
        {"Name": "io-enabled", "Status": "passed" if item.io_enabled else "failed"},
        {"Name": "io-performance", "Status": performance},
    ]
    initialization = None
    if item.initialization is not None:  # restored or copied volumes only, as on EC2
        details.append({"Name": "initialization-state", "Status": item.initialization.state})
        initialization = {
            "InitializationType": item.initialization.kind,
            "Progress": item.initialization.progress,
            "EstimatedTimeToCompleteInSeconds": item.initialization.seconds_left,
        }
    return {
        "VolumeId": item.id,
        "AvailabilityZone": item.zone,
        "VolumeStatus": {"Status": volume_status(item), "Details": details},
        "InitializationStatusDetails": initialization,
        "Events": events,
        "Actions": actions,
        "AttachmentStatuses": [
            {"InstanceId": a.instance_id, "IoPerformance": performance} for a in item.attachments
        ]
        if item.volume_type in ("io1", "io2")
        else None,
    }


def tag_description(item: Tag) -> Doc:
    return {
        "ResourceId": item.resource_id,
        "ResourceType": item.resource_type,
        "Key": item.key,
        "Value": item.value,
    }


def instance_state(state: str) -> Doc:
    return {"Code": INSTANCE_STATE_CODES[state], "Name": state}


def instance_block_devices(item: Instance) -> list[Doc]:
    return [
        {
            "DeviceName": a.device,
            "Ebs": {
                "AttachTime": a.attach_time,
                "DeleteOnTermination": a.delete_on_termination,
                "Status": a.state,
                "VolumeId": a.volume_id,
            },
        }
        for a in item.attachments
    ]


def _architecture(instance_type: str) -> str:
    known = INSTANCE_TYPES.get(instance_type)
    return known.architecture if known is not None else "x86_64"


def instance(item: Instance, ebs: Ebs) -> Doc:
    return {
        "InstanceId": item.id,
        "ImageId": item.image_id,
        "InstanceType": item.instance_type,
        "LaunchTime": item.launch_time,
        "State": instance_state(item.state),
        "Placement": {"AvailabilityZone": item.zone, "Tenancy": "default"},
        "Architecture": _architecture(item.instance_type),
        "RootDeviceType": "instance-store"
        if any(device == item.root_device_name for device, _ in item.ephemeral)
        else "ebs",
        "RootDeviceName": item.root_device_name,
        "Hypervisor": "xen",
        "VirtualizationType": "hvm",
        "AmiLaunchIndex": item.launch_index,
        "BlockDeviceMappings": instance_block_devices(item),
        "Tags": tag_list(item.tags),
        "PrivateDnsName": f"ip-127-0-0-1.{ebs.region.name}.compute.internal"
        if item.is_host
        else "",
        "StateReason": {"Code": item.state_reason[0], "Message": item.state_reason[1]}
        if item.state_reason
        else None,
    }


def snapshot_lock(item: SnapshotLock) -> Doc:
    return {
        "OwnerId": item.owner_id,
        "SnapshotId": item.snapshot_id,
        "LockState": item.state(),
        "LockDuration": item.duration_days,
        "CoolOffPeriod": item.cool_off_hours,
        "CoolOffPeriodExpiresOn": item.cool_off_expires,
        "LockCreatedOn": item.created_on,
        "LockDurationStartTime": item.duration_start,
        "LockExpiresOn": item.expires_on,
    }


def snapshot_tier_status(item: TierStatus) -> Doc:
    return {
        "SnapshotId": item.snapshot.id,
        "VolumeId": item.snapshot.volume_id,
        "Status": item.snapshot.state,
        "OwnerId": item.snapshot.owner_id,
        "Tags": tag_list(item.snapshot.tags),
        "StorageTier": item.storage_tier,
        "LastTieringStartTime": item.started,
        "LastTieringProgress": item.progress,
        "LastTieringOperationStatus": item.state,
        "ArchivalCompleteTime": item.archival_complete_time,
        "RestoreExpiryTime": item.restore_expiry,
    }


def fast_restore(item: FastRestore) -> Doc:
    return {
        "SnapshotId": item.snapshot_id,
        "AvailabilityZone": item.zone,
        "State": item.state,
        "StateTransitionReason": USER_INITIATED,
        "OwnerId": item.owner_id,
        "EnablingTime": item.times.get("enabling"),
        "OptimizingTime": item.times.get("optimizing"),
        "EnabledTime": item.times.get("enabled"),
        "DisablingTime": item.times.get("disabling"),
        "DisabledTime": item.times.get("disabled"),
    }


def fast_restore_errors(refused: list[FastRestoreError]) -> list[Doc]:
    """Refusals grouped per snapshot, as the Unsuccessful list of Enable/Disable returns them."""
    by_snapshot: dict[str, list[Doc]] = {}
    for error in refused:
        by_snapshot.setdefault(error.snapshot_id, []).append(
            {
                "AvailabilityZone": error.zone,
                "Error": {"Code": error.code, "Message": error.message},
            }
        )
    return [
        {"SnapshotId": snapshot_id, "FastSnapshotRestoreStateErrors": items}
        for snapshot_id, items in by_snapshot.items()
    ]
