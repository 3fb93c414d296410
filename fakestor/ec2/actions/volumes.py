"""EC2 actions on volumes: create, copy, describe, delete, attach, detach, modify, status,
attributes."""

from __future__ import annotations

from fakestor import errors
from fakestor.control import (
    account,
    attachments,
    modifications,
    volume_copies,
    volumes,
)
from fakestor.control.context import Ebs
from fakestor.control.requests import (
    VolumeChange,
    VolumeCopyRequest,
    VolumeRequest,
)
from fakestor.ec2 import views
from fakestor.ec2.actions.common import (
    Params,
    Result,
    action,
    check_paging,
    client_token_of,
    dry_run_of,
    filters_of,
    page_of,
    tag_specs_of,
)


@action
def create_volume(ebs: Ebs, params: Params) -> Result:
    client_token = client_token_of(params, zone_params=("AvailabilityZone", "AvailabilityZoneId"))
    if params.get("AvailabilityZoneId") and params.get("AvailabilityZone"):
        raise errors.InvalidParameterCombination(
            "Either AvailabilityZone or AvailabilityZoneId must be specified, but not both."
        )
    if params.get("AvailabilityZoneId"):
        params["AvailabilityZone"] = account.zone_named(ebs, params["AvailabilityZoneId"])
    request = VolumeRequest(
        zone=params.get("AvailabilityZone"),
        size=params.get("Size"),
        snapshot_id=params.get("SnapshotId"),
        volume_type=params.get("VolumeType"),
        iops=params.get("Iops"),
        throughput=params.get("Throughput"),
        encrypted=params.get("Encrypted"),
        kms_key_id=params.get("KmsKeyId"),
        multi_attach=bool(params.get("MultiAttachEnabled", False)),
        tag_specs=tag_specs_of(params),
        initialization_rate=params.get("VolumeInitializationRate"),
    )
    volume = volumes.create_volume(
        ebs, request, client_token=client_token, dry_run=dry_run_of(params)
    )
    return views.volume(volume, ebs.region.zone_id(volume.zone))


@action
def copy_volumes(ebs: Ebs, params: Params) -> Result:
    request = VolumeCopyRequest(
        source_volume_id=params["SourceVolumeId"],
        size=params.get("Size"),
        volume_type=params.get("VolumeType"),
        iops=params.get("Iops"),
        throughput=params.get("Throughput"),
        encrypted=params.get("Encrypted"),
        kms_key_id=params.get("KmsKeyId"),
        multi_attach=bool(params.get("MultiAttachEnabled", False)),
        tag_specs=tag_specs_of(params),
    )
    volume = volume_copies.copy_volumes(
        ebs, request, client_token=client_token_of(params), dry_run=dry_run_of(params)
    )
    return {"Volumes": [views.volume(volume, ebs.region.zone_id(volume.zone))]}


@action
def describe_volumes(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeVolumes", params, 5, 500, "VolumeIds", capped=True)
    found = volumes.describe_volumes(
        ebs,
        volume_ids=params.get("VolumeIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of("DescribeVolumes", params, page_size, found, lambda v: v.id)
    return {
        "Volumes": [views.volume(v, ebs.region.zone_id(v.zone)) for v in page],
        "NextToken": token,
    }


@action
def delete_volume(ebs: Ebs, params: Params) -> Result:
    volumes.delete_volume(ebs, params["VolumeId"], dry_run=dry_run_of(params))
    return {}


@action
def attach_volume(ebs: Ebs, params: Params) -> Result:
    attachment = attachments.attach_volume(
        ebs, params["VolumeId"], params["InstanceId"], params["Device"], dry_run=dry_run_of(params)
    )
    return views.attachment(attachment)


@action
def detach_volume(ebs: Ebs, params: Params) -> Result:
    attachment = attachments.detach_volume(
        ebs,
        params["VolumeId"],
        instance_id=params.get("InstanceId"),
        device=params.get("Device"),
        force=bool(params.get("Force", False)),
        dry_run=dry_run_of(params),
    )
    return views.attachment(attachment)


@action
def modify_volume(ebs: Ebs, params: Params) -> Result:
    change = VolumeChange(
        size=params.get("Size"),
        volume_type=params.get("VolumeType"),
        iops=params.get("Iops"),
        throughput=params.get("Throughput"),
        multi_attach=params.get("MultiAttachEnabled"),
    )
    modification = modifications.modify_volume(
        ebs, params["VolumeId"], change, dry_run=dry_run_of(params)
    )
    return {"VolumeModification": views.modification(modification)}


@action
def describe_volumes_modifications(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeVolumesModifications", params, 5, 500)
    found = modifications.describe_volumes_modifications(
        ebs,
        volume_ids=params.get("VolumeIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of(
        "DescribeVolumesModifications", params, page_size, found, lambda m: m.volume_id
    )
    return {"VolumesModifications": [views.modification(m) for m in page], "NextToken": token}


@action
def describe_volume_status(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeVolumeStatus", params, 5, 1000, "VolumeIds", capped=True)
    found = volumes.describe_volume_status(
        ebs,
        volume_ids=params.get("VolumeIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of("DescribeVolumeStatus", params, page_size, found, lambda v: v.id)
    return {"VolumeStatuses": [views.volume_status_item(v) for v in page], "NextToken": token}


@action
def describe_volume_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    volume = volumes.volume_attribute(
        ebs, params["VolumeId"], attribute, dry_run=dry_run_of(params)
    )
    result: Result = {"VolumeId": volume.id}
    if attribute == "autoEnableIO":
        result["AutoEnableIO"] = {"Value": volume.auto_enable_io}
    else:
        result["ProductCodes"] = []
    return result


@action
def modify_volume_attribute(ebs: Ebs, params: Params) -> Result:
    auto_enable_io = params.get("AutoEnableIO", {}).get("Value")
    volumes.modify_volume_attribute(
        ebs, params["VolumeId"], auto_enable_io, dry_run=dry_run_of(params)
    )
    return {}


@action
def enable_volume_io(ebs: Ebs, params: Params) -> Result:
    volumes.enable_volume_io(ebs, params["VolumeId"], dry_run=dry_run_of(params))
    return {}
