"""EC2 actions: read the parsed parameters, call the model, shape the result.

Each handler takes the control plane and the operation's input (botocore member
names as keys) and returns the output as a dict of the same kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fakestor import errors, paging
from fakestor.ec2 import views
from fakestor.filters import Filter, check_filters, matches
from fakestor.model import Ebs, TagSpec, VolumeChange, VolumeRequest

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
    tags = {}
    for item in items:
        if "Key" not in item:
            raise errors.MissingParameter("Tag.N.Key")
        tags[item["Key"]] = item.get("Value", "")
    return tags


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
        zone_by_id = {ebs.region.zone_id(zone): zone for zone in ebs.region.zones}
        if params["AvailabilityZoneId"] not in zone_by_id:
            raise errors.InvalidParameterValue(
                f"Invalid availability zone id: [{params['AvailabilityZoneId']}]"
            )
        params["AvailabilityZone"] = zone_by_id[params["AvailabilityZoneId"]]
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
    )
    volume = ebs.create_volume(request, _tag_specs(params), _dry(params))
    return views.volume(volume, ebs.region.zone_id(volume.zone))


@action
def describe_volumes(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeVolumes", params, 5, 500, "VolumeIds", capped=True)
    volumes = ebs.describe_volumes(params.get("VolumeIds", []), _filters(params), _dry(params))
    page, token = _page("DescribeVolumes", params, page_size, volumes, lambda v: v.id)
    return {
        "Volumes": [views.volume(v, ebs.region.zone_id(v.zone)) for v in page],
        "NextToken": token,
    }


@action
def delete_volume(ebs: Ebs, params: Params) -> Result:
    ebs.delete_volume(params["VolumeId"], _dry(params))
    return {}


@action
def attach_volume(ebs: Ebs, params: Params) -> Result:
    attachment = ebs.attach_volume(
        params["VolumeId"], params["InstanceId"], params["Device"], _dry(params)
    )
    return views.attachment(attachment)


@action
def detach_volume(ebs: Ebs, params: Params) -> Result:
    attachment = ebs.detach_volume(
        params["VolumeId"],
        params.get("InstanceId"),
        params.get("Device"),
        bool(params.get("Force", False)),
        _dry(params),
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
    modification = ebs.modify_volume(params["VolumeId"], change, _dry(params))
    return {"VolumeModification": views.modification(modification)}


@action
def describe_volumes_modifications(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeVolumesModifications", params, 5, 500)
    found = ebs.describe_volumes_modifications(
        params.get("VolumeIds", []), _filters(params), _dry(params)
    )
    page, token = _page(
        "DescribeVolumesModifications", params, page_size, found, lambda m: m.volume_id
    )
    return {"VolumesModifications": [views.modification(m) for m in page], "NextToken": token}


@action
def describe_volume_status(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeVolumeStatus", params, 5, 1000, "VolumeIds", capped=True)
    volumes = ebs.describe_volume_status(
        params.get("VolumeIds", []), _filters(params), _dry(params)
    )
    page, token = _page("DescribeVolumeStatus", params, page_size, volumes, lambda v: v.id)
    return {"VolumeStatuses": [views.volume_status_item(v) for v in page], "NextToken": token}


@action
def describe_volume_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    volume = ebs.volume_attribute(params["VolumeId"], attribute, _dry(params))
    result: Result = {"VolumeId": volume.id}
    if attribute == "autoEnableIO":
        result["AutoEnableIO"] = {"Value": volume.auto_enable_io}
    else:
        result["ProductCodes"] = []
    return result


@action
def modify_volume_attribute(ebs: Ebs, params: Params) -> Result:
    auto_enable_io = params.get("AutoEnableIO", {}).get("Value")
    ebs.modify_volume_attribute(params["VolumeId"], auto_enable_io, _dry(params))
    return {}


@action
def enable_volume_io(ebs: Ebs, params: Params) -> Result:
    ebs.enable_volume_io(params["VolumeId"], _dry(params))
    return {}


# ---- snapshots --------------------------------------------------------------


@action
def create_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshot = ebs.create_snapshot(
        params["VolumeId"], params.get("Description", ""), _tag_specs(params), _dry(params)
    )
    return views.snapshot(snapshot)


@action
def create_snapshots(ebs: Ebs, params: Params) -> Result:
    spec = params["InstanceSpecification"]
    if "InstanceId" not in spec:
        raise errors.MissingParameter("InstanceSpecification.InstanceId")
    snapshots = ebs.create_snapshots(
        spec["InstanceId"],
        bool(spec.get("ExcludeBootVolume", False)),
        spec.get("ExcludeDataVolumeIds", []),
        params.get("Description", ""),
        _tag_specs(params),
        params.get("CopyTagsFromSource") == "volume",
        _dry(params),
    )
    return {"Snapshots": [views.snapshot_info(s) for s in snapshots]}


@action
def copy_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshot = ebs.copy_snapshot(
        params["SourceSnapshotId"],
        params["SourceRegion"],
        params.get("Description"),
        params.get("Encrypted"),
        params.get("KmsKeyId"),
        _tag_specs(params),
        _dry(params),
    )
    return {"SnapshotId": snapshot.id, "Tags": views.tag_list(snapshot.tags)}


@action
def describe_snapshots(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeSnapshots", params, 5, 1000, "SnapshotIds", capped=True)
    snapshots = ebs.describe_snapshots(
        params.get("SnapshotIds", []),
        params.get("OwnerIds", []),
        params.get("RestorableByUserIds", []),
        _filters(params),
        _dry(params),
    )
    page, token = _page("DescribeSnapshots", params, page_size, snapshots, lambda s: s.id)
    return {"Snapshots": [views.snapshot(s) for s in page], "NextToken": token}


@action
def delete_snapshot(ebs: Ebs, params: Params) -> Result:
    ebs.delete_snapshot(params["SnapshotId"], _dry(params))
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
    ebs.modify_snapshot_permission(params["SnapshotId"], add, remove, _dry(params))
    return {}


@action
def reset_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    if params["Attribute"] != "createVolumePermission":
        raise errors.InvalidParameterValue(
            f"Value ({params['Attribute']}) for parameter attribute is invalid. Only "
            "createVolumePermission can be reset."
        )
    ebs.reset_snapshot_permission(params["SnapshotId"], _dry(params))
    return {}


@action
def describe_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    snapshot = ebs.snapshot_attribute(params["SnapshotId"], attribute, _dry(params))
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
    ebs.create_tags(params["Resources"], _tags(params["Tags"]), _dry(params))
    return {}


@action
def delete_tags(ebs: Ebs, params: Params) -> Result:
    tags = []
    for item in params.get("Tags", []):
        if "Key" not in item:
            raise errors.MissingParameter("Tag.N.Key")
        tags.append((item["Key"], item.get("Value")))
    ebs.delete_tags(params["Resources"], tags, _dry(params))
    return {}


@action
def describe_tags(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeTags", params, 5, 1000)
    tags = ebs.describe_tags(_filters(params), _dry(params))
    page, token = _page(
        "DescribeTags", params, page_size, tags, lambda t: f"{t.resource_id}\0{t.key}"
    )
    return {"Tags": [views.tag_description(t) for t in page], "NextToken": token}


# ---- region, zones and account settings ------------------------------------


@action
def describe_availability_zones(ebs: Ebs, params: Params) -> Result:
    region = ebs.region
    zones: list[Params] = [
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
        for zone in region.zones
    ]
    wanted_names = params.get("ZoneNames", [])
    for name in wanted_names:
        if name not in region.zones:
            raise errors.InvalidParameterValue(f"The zone '{name}' does not exist.")
    wanted_ids = params.get("ZoneIds", [])
    known_ids = {region.zone_id(zone) for zone in region.zones}
    for zone_id in wanted_ids:
        if zone_id not in known_ids:
            raise errors.InvalidParameterValue(f"The zone ID '{zone_id}' does not exist.")
    filters = _filters(params)
    selected = []
    for zone in zones:
        if wanted_names and zone["ZoneName"] not in wanted_names:
            continue
        if wanted_ids and zone["ZoneId"] not in wanted_ids:
            continue
        values: dict[str, list[str]] = {
            "zone-name": [str(zone["ZoneName"])],
            "zone-id": [str(zone["ZoneId"])],
            "region-name": [region.name],
            "state": ["available"],
            "zone-type": ["availability-zone"],
            "group-name": [region.name],
        }
        check_filters(filters, values)
        if matches(values, filters):
            selected.append(zone)
    if _dry(params):
        raise errors.DryRunOperation()
    return {"AvailabilityZones": selected}


@action
def describe_regions(ebs: Ebs, params: Params) -> Result:
    if _dry(params):
        raise errors.DryRunOperation()
    name = ebs.region.name
    wanted = params.get("RegionNames", [])
    unknown = [region for region in wanted if region != name]
    if unknown:
        raise errors.InvalidParameterValue(
            f"Invalid region: {unknown[0]}; this fakestor serves only {name}."
        )
    region = {
        "RegionName": name,
        "Endpoint": f"ec2.{name}.amazonaws.com",
        "OptInStatus": "opt-in-not-required",
    }
    values = {
        "region-name": [name],
        "endpoint": [region["Endpoint"]],
        "opt-in-status": [region["OptInStatus"]],
    }
    filters = _filters(params)
    check_filters(filters, values)
    return {"Regions": [region] if matches(values, filters) else []}


@action
def get_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    if _dry(params):
        raise errors.DryRunOperation()
    return {"EbsEncryptionByDefault": ebs.encryption_by_default(), "SseType": "sse-ebs"}


@action
def enable_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    return {"EbsEncryptionByDefault": ebs.set_encryption_by_default(True, _dry(params))}


@action
def disable_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    return {"EbsEncryptionByDefault": ebs.set_encryption_by_default(False, _dry(params))}


@action
def get_ebs_default_kms_key_id(ebs: Ebs, params: Params) -> Result:
    if _dry(params):
        raise errors.DryRunOperation()
    return {"KmsKeyId": ebs.region.default_kms_key_id}


# ---- instances --------------------------------------------------------------


def _reservation(ebs: Ebs, instances: Sequence[Any], reservation_id: str) -> Result:
    return {
        "ReservationId": reservation_id,
        "OwnerId": ebs.region.account_id,
        "Groups": [],
        "Instances": [views.instance(i, ebs) for i in instances],
    }


@action
def run_instances(ebs: Ebs, params: Params) -> Result:
    if params.get("BlockDeviceMappings"):
        raise errors.InvalidParameterCombination(
            "fakestor does not create volumes at launch: launch without BlockDeviceMappings, "
            "then CreateVolume and AttachVolume."
        )
    instances = ebs.run_instances(
        params.get("ImageId", "ami-00000000000000000"),
        params["MinCount"],
        params["MaxCount"],
        params.get("InstanceType"),
        params.get("Placement", {}).get("AvailabilityZone"),
        _tag_specs(params),
        _dry(params),
    )
    return _reservation(ebs, instances, instances[0].reservation_id)


@action
def describe_instances(ebs: Ebs, params: Params) -> Result:
    page_size = _check_paging("DescribeInstances", params, 5, 1000, "InstanceIds")
    instances = ebs.describe_instances(
        params.get("InstanceIds", []), _filters(params), _dry(params)
    )
    page, token = _page("DescribeInstances", params, page_size, instances, lambda i: i.id)
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
    changes = ebs.terminate_instances(params["InstanceIds"], _dry(params))
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
