"""EC2 actions on snapshots: create (one or an instance's), copy, describe, delete, attributes."""

from __future__ import annotations

from collections.abc import Sequence

from fakestor import errors
from fakestor.control import (
    snapshots,
)
from fakestor.control.context import Ebs
from fakestor.control.requests import (
    InstanceSnapshotsRequest,
    SnapshotCopyRequest,
)
from fakestor.ec2 import views
from fakestor.ec2.actions.common import (
    Params,
    Result,
    action,
    check_paging,
    dry_run_of,
    filters_of,
    page_of,
    tag_specs_of,
)


@action
def create_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshot = snapshots.create_snapshot(
        ebs,
        params["VolumeId"],
        description=params.get("Description", ""),
        tag_specs=tag_specs_of(params),
        dry_run=dry_run_of(params),
    )
    # EC2 answers CreateSnapshot with a tag set, empty if the snapshot has no tags.
    return {**views.snapshot(snapshot), "Tags": views.tag_list(snapshot.tags) or []}


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
        tag_specs=tag_specs_of(params),
        copy_tags_from_volume=params.get("CopyTagsFromSource") == "volume",
    )
    made = snapshots.create_snapshots(ebs, request, dry_run=dry_run_of(params))
    return {
        "Snapshots": [
            {**views.snapshot_info(s), "Tags": views.tag_list(s.tags) or []} for s in made
        ]
    }


@action
def copy_snapshot(ebs: Ebs, params: Params) -> Result:
    request = SnapshotCopyRequest(
        source_snapshot_id=params["SourceSnapshotId"],
        source_region=params["SourceRegion"],
        description=params.get("Description"),
        encrypted=params.get("Encrypted"),
        kms_key_id=params.get("KmsKeyId"),
        tag_specs=tag_specs_of(params),
    )
    snapshot = snapshots.copy_snapshot(ebs, request, dry_run=dry_run_of(params))
    return {"SnapshotId": snapshot.id, "Tags": views.tag_list(snapshot.tags)}


@action
def describe_snapshots(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeSnapshots", params, 5, 1000, "SnapshotIds", capped=True)
    found = snapshots.describe_snapshots(
        ebs,
        snapshot_ids=params.get("SnapshotIds", []),
        owner_ids=params.get("OwnerIds", []),
        restorable_by=params.get("RestorableByUserIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of("DescribeSnapshots", params, page_size, found, lambda s: s.id)
    return {"Snapshots": [views.snapshot(s) for s in page], "NextToken": token}


@action
def delete_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshots.delete_snapshot(ebs, params["SnapshotId"], dry_run=dry_run_of(params))
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
        ebs, params["SnapshotId"], add, remove, dry_run=dry_run_of(params)
    )
    return {}


@action
def reset_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    if params["Attribute"] != "createVolumePermission":
        raise errors.InvalidParameterValue(
            f"Value ({params['Attribute']}) for parameter attribute is invalid. Only "
            "createVolumePermission can be reset."
        )
    snapshots.reset_snapshot_permission(ebs, params["SnapshotId"], dry_run=dry_run_of(params))
    return {}


@action
def describe_snapshot_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    snapshot = snapshots.snapshot_attribute(
        ebs, params["SnapshotId"], attribute, dry_run=dry_run_of(params)
    )
    result: Result = {"SnapshotId": snapshot.id}
    if attribute == "createVolumePermission":
        permissions: list[Params] = [{"Group": "all"}] if snapshot.public else []
        permissions += [{"UserId": user} for user in snapshot.shared_with]
        result["CreateVolumePermissions"] = permissions
    else:
        result["ProductCodes"] = []
    return result
