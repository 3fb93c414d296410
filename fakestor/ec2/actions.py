"""EC2 actions: read the parsed parameters, call the model, shape the result.

Each handler takes the control plane and the operation's input (botocore member
names as keys) and returns the output as a dict of the same kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fakestor import errors
from fakestor.control import (
    account,
    attachments,
    instances,
    modifications,
    snapshots,
    tags,
    volumes,
)
from fakestor.control.context import Ebs
from fakestor.control.filters import Filter
from fakestor.control.requests import (
    InstanceSnapshotsRequest,
    LaunchRequest,
    SnapshotCopyRequest,
    TagSpec,
    VolumeChange,
    VolumeRequest,
)
from fakestor.ec2 import paging, views

Params = dict[str, Any]
Result = dict[str, Any]
Handler = Callable[[Ebs, Params], Result]

ACTIONS: dict[str, Handler] = {}


def action(handler: Handler) -> Handler:
    """Register `handler` under its EC2 action name (snake_case -> PascalCase)."""
    name = "".join(part.capitalize() for part in handler.__name__.split("_"))
    ACTIONS[_IRREGULAR_NAMES.get(name, name)] = handler
    return handler


_IRREGULAR_NAMES = {"EnableVolumeIo": "EnableVolumeIO"}


def _filters(params: Params) -> list[Filter]:
    filters = []
    for item in params.get("Filters", []):
        if "Name" not in item:
            raise errors.MissingParameter("Filter.N.Name")
        filters.append(Filter(item["Name"], item.get("Values", [])))
    return filters


def _tag_specs(params: Params) -> list[TagSpec]:
    specs = []
    for spec in params.get("TagSpecifications", []):
        if "ResourceType" not in spec:
            raise errors.MissingParameter("TagSpecification.N.ResourceType")
        specs.append(TagSpec(spec["ResourceType"], _tags(spec.get("Tags", []))))
    return specs


def _tags(items: Sequence[Params]) -> dict[str, str]:
    found = {}
    for item in items:
        if "Key" not in item:
            raise errors.MissingParameter("Tag.N.Key")
        found[item["Key"]] = item.get("Value", "")
    return found


def _dry(params: Params) -> bool:
    return bool(params.get("DryRun", False))


def _check_paging(
    scope: str,
    params: Params,
    low: int,
    high: int,
    ids_param: str | None = None,
    *,
    capped: bool = False,
) -> int | None:
    """Validate MaxResults and NextToken before any work, as EC2 does; the page size."""
    page_size = paging.check_max_results(
        params.get("MaxResults"),
        low,
        high,
        with_ids=bool(ids_param and params.get(ids_param)),
        ids_name=ids_param or "",
        capped=capped,
    )
    if params.get("NextToken"):
        paging.decode_token(params["NextToken"], scope)
    return page_size


def _page(
    scope: str,
    params: Params,
    page_size: int | None,
    items: Sequence[Any],
    key: Callable[[Any], str],
) -> tuple[list[Any], str | None]:
    return paging.paginate(items, key, page_size, params.get("NextToken"), scope)


# ---- volumes ----------------------------------------------------------------


@action
def create_volume(ebs: Ebs, params: Params) -> Result:
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
        tag_specs=_tag_specs(params),
    )
    volume = volumes.create_volume(ebs, request, dry_run=_dry(params))
    return views.volume(volume, ebs.region.zone_id(volume.zone))


@action
def describe_volumes(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeVolumes", params, 5, 500, "VolumeIds", capped=True)
    found = volumes.describe_volumes(
        ebs, volume_ids=params.get("VolumeIds", []), filters=_filters(params), dry_run=_dry(params)
    )
    page, token = _page("DescribeVolumes", params, page_size, found, lambda v: v.id)
    return {
        "Volumes": [views.volume(v, ebs.region.zone_id(v.zone)) for v in page],
        "NextToken": token,
    }


@action
def delete_volume(ebs: Ebs, params: Params) -> Result:
    volumes.delete_volume(ebs, params["VolumeId"], dry_run=_dry(params))
    return {}


@action
def attach_volume(ebs: Ebs, params: Params) -> Result:
    attachment = attachments.attach_volume(
        ebs, params["VolumeId"], params["InstanceId"], params["Device"], dry_run=_dry(params)
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
        dry_run=_dry(params),
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
        ebs, params["VolumeId"], change, dry_run=_dry(params)
    )
    return {"VolumeModification": views.modification(modification)}


@action
def describe_volumes_modifications(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeVolumesModifications", params, 5, 500)
    found = modifications.describe_volumes_modifications(
        ebs, volume_ids=params.get("VolumeIds", []), filters=_filters(params), dry_run=_dry(params)
    )
    page, token = _page(
        "DescribeVolumesModifications", params, page_size, found, lambda m: m.volume_id
    )
    return {"VolumesModifications": [views.modification(m) for m in page], "NextToken": token}


@action
def describe_volume_status(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeVolumeStatus", params, 5, 1000, "VolumeIds", capped=True)
    found = volumes.describe_volume_status(
        ebs, volume_ids=params.get("VolumeIds", []), filters=_filters(params), dry_run=_dry(params)
    )
    page, token = _page("DescribeVolumeStatus", params, page_size, found, lambda v: v.id)
    return {"VolumeStatuses": [views.volume_status_item(v) for v in page], "NextToken": token}


@action
def describe_volume_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    volume = volumes.volume_attribute(ebs, params["VolumeId"], attribute, dry_run=_dry(params))
    result: Result = {"VolumeId": volume.id}
    if attribute == "autoEnableIO":
        result["AutoEnableIO"] = {"Value": volume.auto_enable_io}
    else:
        result["ProductCodes"] = []
    return result


@action
def modify_volume_attribute(ebs: Ebs, params: Params) -> Result:
    auto_enable_io = params.get("AutoEnableIO", {}).get("Value")
    volumes.modify_volume_attribute(ebs, params["VolumeId"], auto_enable_io, dry_run=_dry(params))
    return {}


@action
def enable_volume_io(ebs: Ebs, params: Params) -> Result:
    volumes.enable_volume_io(ebs, params["VolumeId"], dry_run=_dry(params))
    return {}


# ---- snapshots --------------------------------------------------------------


@action
def create_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshot = snapshots.create_snapshot(
        ebs,
        params["VolumeId"],
        description=params.get("Description", ""),
        tag_specs=_tag_specs(params),
        dry_run=_dry(params),
    )
    return views.snapshot(snapshot)


@action
def create_snapshots(ebs: Ebs, params: Params) -> Result:
    spec = params["InstanceSpecification"]
    if "InstanceId" not in spec:
        raise errors.MissingParameter("InstanceSpecification.InstanceId")
    request = InstanceSnapshotsRequest(
        instance_id=spec["InstanceId"],
        exclude_boot_volume=bool(spec.get("ExcludeBootVolume", False)),
        exclude_volume_ids=spec.get("ExcludeDataVolumeIds", []),
        description=params.get("Description", ""),
        tag_specs=_tag_specs(params),
        copy_tags_from_volume=params.get("CopyTagsFromSource") == "volume",
    )
    made = snapshots.create_snapshots(ebs, request, dry_run=_dry(params))
    return {"Snapshots": [views.snapshot_info(s) for s in made]}


@action
def copy_snapshot(ebs: Ebs, params: Params) -> Result:
    request = SnapshotCopyRequest(
        source_snapshot_id=params["SourceSnapshotId"],
        source_region=params["SourceRegion"],
        description=params.get("Description"),
        encrypted=params.get("Encrypted"),
        kms_key_id=params.get("KmsKeyId"),
        tag_specs=_tag_specs(params),
    )
    snapshot = snapshots.copy_snapshot(ebs, request, dry_run=_dry(params))
    return {"SnapshotId": snapshot.id, "Tags": views.tag_list(snapshot.tags)}


@action
def describe_snapshots(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeSnapshots", params, 5, 1000, "SnapshotIds", capped=True)
    found = snapshots.describe_snapshots(
        ebs,
        snapshot_ids=params.get("SnapshotIds", []),
        owner_ids=params.get("OwnerIds", []),
        restorable_by=params.get("RestorableByUserIds", []),
        filters=_filters(params),
        dry_run=_dry(params),
    )
    page, token = _page("DescribeSnapshots", params, page_size, found, lambda s: s.id)
    return {"Snapshots": [views.snapshot(s) for s in page], "NextToken": token}


@action
def delete_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshots.delete_snapshot(ebs, params["SnapshotId"], dry_run=_dry(params))
    return {}


def _grantees(permission: Sequence[Params]) -> list[tuple[str, str]]:
    grantees = []
    for item in permission:
        if "UserId" in item:
            grantees.append(("user", item["UserId"]))
        if "Group" in item:
            grantees.append(("group", item["Group"]))
    return grantees


@action
def modify_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params.get("Attribute", "createVolumePermission")
    if attribute != "createVolumePermission":
        raise errors.InvalidParameterValue(
            f"Value ({attribute}) for parameter attribute is invalid. Only "
            "createVolumePermission can be modified."
        )
    add = _grantees(params.get("CreateVolumePermission", {}).get("Add", []))
    remove = _grantees(params.get("CreateVolumePermission", {}).get("Remove", []))
    kind = params.get("OperationType")
    if kind is not None:
        # The older form: OperationType=add|remove with UserId.N / UserGroup.N.
        if kind not in ("add", "remove"):
            raise errors.InvalidParameterValue(
                f"Value ({kind}) for parameter OperationType is invalid. Use add or remove."
            )
        legacy = [("user", u) for u in params.get("UserIds", [])] + [
            ("group", g) for g in params.get("GroupNames", [])
        ]
        (add if kind == "add" else remove).extend(legacy)
    snapshots.modify_snapshot_permission(
        ebs, params["SnapshotId"], add, remove, dry_run=_dry(params)
    )
    return {}


@action
def reset_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    if params["Attribute"] != "createVolumePermission":
        raise errors.InvalidParameterValue(
            f"Value ({params['Attribute']}) for parameter attribute is invalid. Only "
            "createVolumePermission can be reset."
        )
    snapshots.reset_snapshot_permission(ebs, params["SnapshotId"], dry_run=_dry(params))
    return {}


@action
def describe_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    snapshot = snapshots.snapshot_attribute(
        ebs, params["SnapshotId"], attribute, dry_run=_dry(params)
    )
    result: Result = {"SnapshotId": snapshot.id}
    if attribute == "createVolumePermission":
        permissions: list[Params] = [{"Group": "all"}] if snapshot.public else []
        permissions += [{"UserId": user} for user in snapshot.shared_with]
        result["CreateVolumePermissions"] = permissions
    else:
        result["ProductCodes"] = []
    return result


# ---- tags -------------------------------------------------------------------


@action
def create_tags(ebs: Ebs, params: Params) -> Result:
    tags.create_tags(ebs, params["Resources"], _tags(params["Tags"]), dry_run=_dry(params))
    return {}


@action
def delete_tags(ebs: Ebs, params: Params) -> Result:
    doomed = []
    for item in params.get("Tags", []):
        if "Key" not in item:
            raise errors.MissingParameter("Tag.N.Key")
        doomed.append((item["Key"], item.get("Value")))
    tags.delete_tags(ebs, params["Resources"], doomed, dry_run=_dry(params))
    return {}


@action
def describe_tags(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeTags", params, 5, 1000)
    found = tags.describe_tags(ebs, filters=_filters(params), dry_run=_dry(params))
    page, token = _page(
        "DescribeTags", params, page_size, found, lambda t: f"{t.resource_id}\0{t.key}"
    )
    return {"Tags": [views.tag_description(t) for t in page], "NextToken": token}


# ---- region, zones and account settings ------------------------------------


@action
def describe_availability_zones(ebs: Ebs, params: Params) -> Result:
    region = ebs.region
    zones = account.describe_zones(
        ebs,
        zone_names=params.get("ZoneNames", []),
        zone_ids=params.get("ZoneIds", []),
        filters=_filters(params),
        dry_run=_dry(params),
    )
    return {
        "AvailabilityZones": [
            {
                "ZoneName": zone,
                "ZoneId": region.zone_id(zone),
                "State": "available",
                "RegionName": region.name,
                "ZoneType": "availability-zone",
                "OptInStatus": "opt-in-not-required",
                "GroupName": region.name,
                "NetworkBorderGroup": region.name,
                "Messages": [],
            }
            for zone in zones
        ]
    }


@action
def describe_regions(ebs: Ebs, params: Params) -> Result:
    names = account.describe_regions(
        ebs,
        region_names=params.get("RegionNames", []),
        filters=_filters(params),
        dry_run=_dry(params),
    )
    return {
        "Regions": [
            {
                "RegionName": name,
                "Endpoint": account.region_endpoint(name),
                "OptInStatus": "opt-in-not-required",
            }
            for name in names
        ]
    }


@action
def get_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    enabled = account.get_encryption_by_default(ebs, dry_run=_dry(params))
    return {"EbsEncryptionByDefault": enabled, "SseType": "sse-ebs"}


@action
def enable_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    enabled = account.set_encryption_by_default(ebs, True, dry_run=_dry(params))
    return {"EbsEncryptionByDefault": enabled}


@action
def disable_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    enabled = account.set_encryption_by_default(ebs, False, dry_run=_dry(params))
    return {"EbsEncryptionByDefault": enabled}


@action
def get_ebs_default_kms_key_id(ebs: Ebs, params: Params) -> Result:
    return {"KmsKeyId": account.default_kms_key_id(ebs, dry_run=_dry(params))}


# ---- instances --------------------------------------------------------------


def _reservation(ebs: Ebs, members: Sequence[Any], reservation_id: str) -> Result:
    return {
        "ReservationId": reservation_id,
        "OwnerId": ebs.region.account_id,
        "Groups": [],
        "Instances": [views.instance(i, ebs) for i in members],
    }


@action
def run_instances(ebs: Ebs, params: Params) -> Result:
    if params.get("BlockDeviceMappings"):
        raise errors.InvalidParameterCombination(
            "fakestor does not create volumes at launch: launch without BlockDeviceMappings, "
            "then CreateVolume and AttachVolume."
        )
    request = LaunchRequest(
        image_id=params.get("ImageId", "ami-00000000000000000"),
        min_count=params["MinCount"],
        max_count=params["MaxCount"],
        instance_type=params.get("InstanceType"),
        zone=params.get("Placement", {}).get("AvailabilityZone"),
        tag_specs=_tag_specs(params),
    )
    launched = instances.run_instances(ebs, request, dry_run=_dry(params))
    return _reservation(ebs, launched, launched[0].reservation_id)


@action
def describe_instances(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeInstances", params, 5, 1000, "InstanceIds")
    found = instances.describe_instances(
        ebs,
        instance_ids=params.get("InstanceIds", []),
        filters=_filters(params),
        dry_run=_dry(params),
    )
    page, token = _page("DescribeInstances", params, page_size, found, lambda i: i.id)
    reservations: dict[str, list[Any]] = {}
    for instance in page:
        reservations.setdefault(instance.reservation_id, []).append(instance)
    return {
        "Reservations": [
            _reservation(ebs, sorted(members, key=lambda i: i.launch_index), reservation_id)
            for reservation_id, members in reservations.items()
        ],
        "NextToken": token,
    }


@action
def terminate_instances(ebs: Ebs, params: Params) -> Result:
    changes = instances.terminate_instances(ebs, params["InstanceIds"], dry_run=_dry(params))
    return {
        "TerminatingInstances": [
            {
                "InstanceId": instance.id,
                "CurrentState": views.instance_state(instance.state),
                "PreviousState": views.instance_state(previous),
            }
            for instance, previous in changes
        ]
    }
