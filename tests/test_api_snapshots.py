"""Snapshots through boto3: create, restore, copy, owners, permissions, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ZONE, Server, fast_waiter, new_volume


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def _snapshot(ec2: Any, volume_id: str, **kwargs: Any) -> str:
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id, **kwargs)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def test_snapshot_and_restore_to_a_larger_volume(ec2: Any) -> None:
    volume_id = new_volume(ec2, 8, Encrypted=True)
    created = ec2.create_snapshot(
        VolumeId=volume_id,
        Description="nightly",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}],
    )
    assert created["State"] in ("pending", "completed")
    assert created["VolumeSize"] == 8 and created["Encrypted"] is True
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[created["SnapshotId"]])
    snapshot = ec2.describe_snapshots(SnapshotIds=[created["SnapshotId"]])["Snapshots"][0]
    assert snapshot["Progress"] == "100%"
    assert snapshot["OwnerId"] == "123456789012"
    assert snapshot["Description"] == "nightly"
    assert snapshot["Tags"] == [{"Key": "k", "Value": "v"}]
    assert snapshot["VolumeId"] == volume_id

    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=created["SnapshotId"])
    assert restored["Size"] == 8 and restored["SnapshotId"] == created["SnapshotId"]
    assert restored["Encrypted"] is True
    bigger = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=created["SnapshotId"], Size=16)
    assert bigger["Size"] == 16
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=created["SnapshotId"], Size=4)
    assert _code(excinfo) == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=created["SnapshotId"], Encrypted=False)
    assert _code(excinfo) == "InvalidParameterCombination"
    by_snapshot = ec2.describe_volumes(
        Filters=[{"Name": "snapshot-id", "Values": [created["SnapshotId"]]}]
    )
    assert {v["VolumeId"] for v in by_snapshot["Volumes"]} == {
        restored["VolumeId"],
        bigger["VolumeId"],
    }


def test_describe_snapshots_by_owner_filter_and_pages(ec2: Any) -> None:
    marker = uuid.uuid4().hex
    volume_id = new_volume(ec2)
    made = {
        _snapshot(
            ec2,
            volume_id,
            TagSpecifications=[
                {"ResourceType": "snapshot", "Tags": [{"Key": marker, "Value": ""}]}
            ],
        )
        for _ in range(7)
    }
    tag_filter = [{"Name": "tag-key", "Values": [marker]}]
    mine = ec2.describe_snapshots(OwnerIds=["self"], Filters=tag_filter)["Snapshots"]
    assert {s["SnapshotId"] for s in mine} == made
    by_account = ec2.describe_snapshots(OwnerIds=["123456789012"], Filters=tag_filter)
    assert len(by_account["Snapshots"]) == 7
    assert ec2.describe_snapshots(OwnerIds=["amazon"], Filters=tag_filter)["Snapshots"] == []
    by_volume = ec2.describe_snapshots(
        Filters=[*tag_filter, {"Name": "volume-id", "Values": [volume_id]}]
    )
    assert len(by_volume["Snapshots"]) == 7
    pages = ec2.get_paginator("describe_snapshots").paginate(
        Filters=tag_filter, PaginationConfig={"PageSize": 5}
    )
    assert [len(page["Snapshots"]) for page in pages] == [5, 2]


def test_copy_snapshot(ec2: Any) -> None:
    source = _snapshot(ec2, new_volume(ec2, 2), Description="original")
    copied = ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion="us-east-1")
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[copied["SnapshotId"]])
    copy = ec2.describe_snapshots(SnapshotIds=[copied["SnapshotId"]])["Snapshots"][0]
    assert copy["VolumeSize"] == 2
    assert source in copy["Description"] and "original" in copy["Description"]
    encrypted = ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion="us-east-1", Encrypted=True)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[encrypted["SnapshotId"]])
    assert ec2.describe_snapshots(SnapshotIds=[encrypted["SnapshotId"]])["Snapshots"][0][
        "Encrypted"
    ]
    # The source is looked for in SourceRegion's records only.
    with pytest.raises(ClientError) as excinfo:
        ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion="eu-west-1")
    assert _code(excinfo) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as excinfo:
        ec2.copy_snapshot(SourceSnapshotId=source, SourceRegion="xx-west-9")
    assert _code(excinfo) == "InvalidParameterValue"


def test_create_snapshots_of_an_instance(ec2: Any, server: Server) -> None:
    reservation = ec2.run_instances(ImageId="ami-00000000000000001", MinCount=1, MaxCount=1)
    instance = reservation["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance])
    first = new_volume(
        ec2, TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "app", "Value": "db"}]}]
    )
    second = new_volume(ec2)
    for volume_id, device in ((first, "/dev/sdf"), (second, "/dev/sdg")):
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device=device)
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[first, second])
    result = ec2.create_snapshots(
        InstanceSpecification={"InstanceId": instance, "ExcludeDataVolumeIds": [second]},
        CopyTagsFromSource="volume",
        Description="crash-consistent set",
    )
    assert [s["VolumeId"] for s in result["Snapshots"]] == [first]
    assert result["Snapshots"][0]["Tags"] == [{"Key": "app", "Value": "db"}]


def test_snapshot_permissions(ec2: Any) -> None:
    snapshot_id = _snapshot(ec2, new_volume(ec2))

    def permissions() -> list[dict[str, str]]:
        return list(
            ec2.describe_snapshot_attribute(
                SnapshotId=snapshot_id, Attribute="createVolumePermission"
            )["CreateVolumePermissions"]
        )

    assert permissions() == []
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        Attribute="createVolumePermission",
        CreateVolumePermission={"Add": [{"UserId": "111122223333"}, {"Group": "all"}]},
    )
    assert permissions() == [{"Group": "all"}, {"UserId": "111122223333"}]
    restorable = ec2.describe_snapshots(
        RestorableByUserIds=["111122223333"],
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}],
    )
    assert len(restorable["Snapshots"]) == 1
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        Attribute="createVolumePermission",
        OperationType="remove",
        GroupNames=["all"],
    )
    assert permissions() == [{"UserId": "111122223333"}]
    ec2.reset_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
    assert permissions() == []
    with pytest.raises(ClientError) as excinfo:
        ec2.modify_snapshot_attribute(
            SnapshotId=snapshot_id,
            Attribute="createVolumePermission",
            CreateVolumePermission={"Add": [{"UserId": "bob"}]},
        )
    assert _code(excinfo) == "InvalidParameterValue"


def test_delete_snapshot(ec2: Any) -> None:
    snapshot_id = _snapshot(ec2, new_volume(ec2))
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    assert _code(excinfo) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as excinfo:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert _code(excinfo) == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as excinfo:
        ec2.delete_snapshot(SnapshotId="snapshot-1")
    assert _code(excinfo) == "InvalidSnapshotID.Malformed"


def test_snapshot_of_missing_volume(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.create_snapshot(VolumeId="vol-0123456789abcdef0")
    assert _code(excinfo) == "InvalidVolume.NotFound"


def test_refused_create_snapshots_starts_nothing(ec2: Any) -> None:
    instance = ec2.run_instances(ImageId="ami-00000000000000001", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance])
    plain = new_volume(ec2)
    crowded = new_volume(
        ec2,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": f"t{i}", "Value": ""} for i in range(50)]}
        ],
    )
    ec2.attach_volume(VolumeId=plain, InstanceId=instance, Device="/dev/sdf")
    ec2.attach_volume(VolumeId=crowded, InstanceId=instance, Device="/dev/sdg")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[plain, crowded])
    with pytest.raises(ClientError) as excinfo:
        ec2.create_snapshots(
            InstanceSpecification={"InstanceId": instance},
            CopyTagsFromSource="volume",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "x", "Value": "y"}]}],
        )
    assert _code(excinfo) == "TagLimitExceeded"
    for volume_id in (plain, crowded):
        found = ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [volume_id]}])
        assert found["Snapshots"] == []
