"""Volumes through boto3 against a live server: create, describe, filter, page, modify, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import OTHER_ZONE, ZONE, ServerFactory, fast_waiter, new_volume, wait_for


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    error = excinfo.value.response["Error"]
    status = excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]
    return error["Code"], error["Message"], status


def test_create_volume_reports_what_was_asked(ec2: Any) -> None:
    created = ec2.create_volume(
        AvailabilityZone=ZONE,
        Size=20,
        VolumeType="gp3",
        Iops=4000,
        Throughput=250,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "db"}]}],
    )
    assert created["VolumeId"].startswith("vol-") and len(created["VolumeId"]) == 21
    assert created["State"] in ("creating", "available")
    fast_waiter(ec2, "volume_available")(VolumeIds=[created["VolumeId"]])
    volume = ec2.describe_volumes(VolumeIds=[created["VolumeId"]])["Volumes"][0]
    assert volume["Size"] == 20
    assert volume["VolumeType"] == "gp3"
    assert (volume["Iops"], volume["Throughput"]) == (4000, 250)
    assert volume["AvailabilityZone"] == ZONE
    assert volume["Tags"] == [{"Key": "Name", "Value": "db"}]
    assert volume["Encrypted"] is False
    assert volume["Attachments"] == []


def test_describe_filters(ec2: Any) -> None:
    marker = uuid.uuid4().hex
    small = new_volume(
        ec2,
        3,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": marker, "Value": "a"}]}],
    )
    big = new_volume(
        ec2,
        130,
        OTHER_ZONE,
        VolumeType="st1",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": marker, "Value": "b"}]}],
    )

    def ids(*filters: dict[str, Any]) -> set[str]:
        volumes = ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": [marker]}, *filters])
        return {v["VolumeId"] for v in volumes["Volumes"]}

    assert ids() == {small, big}
    assert ids({"Name": f"tag:{marker}", "Values": ["b"]}) == {big}
    assert ids({"Name": f"tag:{marker}", "Values": ["?"]}) == {small, big}
    assert ids({"Name": "volume-type", "Values": ["st1"]}) == {big}
    assert ids({"Name": "availability-zone", "Values": [ZONE]}) == {small}
    assert ids({"Name": "size", "Values": ["3", "4"]}) == {small}
    assert ids({"Name": "status", "Values": ["available"]}) == {small, big}
    assert ids({"Name": "volume-id", "Values": [big]}) == {big}
    assert ids({"Name": "status", "Values": ["in-use"]}) == set()
    zone_ids = {z["ZoneName"]: z["ZoneId"] for z in ec2.describe_availability_zones()[
        "AvailabilityZones"]}  # fmt: skip
    assert ids({"Name": "availability-zone-id", "Values": [zone_ids[ZONE]]}) == {small}
    assert ids({"Name": "operator.managed", "Values": ["false"]}) == {small, big}
    described = ec2.describe_volumes(VolumeIds=[small])["Volumes"][0]
    assert described["AvailabilityZoneId"] == zone_ids[ZONE]


@pytest.mark.parametrize(
    ("value", "pattern", "matched"),
    [
        ("[prod]", "[prod]", True),  # brackets are not special in EC2 filters
        ("p", "[prod]", False),
        ("a*b", "a\\*b", True),  # a backslash makes the next character literal
        ("axxb", "a\\*b", False),
        ("what?", "what\\?", True),
        ("back\\slash", "back\\\\slash", True),
        ("database1", "database????", True),  # `?` matches zero or one character
        ("database", "database?", True),
        ("database12", "database?", False),
        ("web-01", "web-*", True),
        ("Web-01", "web-*", False),  # values are case-sensitive
    ],
)
def test_filter_wildcards_are_ec2s(ec2: Any, value: str, pattern: str, matched: bool) -> None:
    """The EC2 User Guide's rules: `*` zero or more, `?` zero or one, `\\` escapes."""
    marker = uuid.uuid4().hex
    volume_id = new_volume(
        ec2,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": marker, "Value": value}]}],
    )
    found = ec2.describe_volumes(Filters=[{"Name": f"tag:{marker}", "Values": [pattern]}])
    assert [v["VolumeId"] for v in found["Volumes"]] == ([volume_id] if matched else [])


def test_unknown_filter_is_refused(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volumes(Filters=[{"Name": "colour", "Values": ["red"]}])
    code, message, status = _error(excinfo)
    assert (code, status) == ("InvalidParameterValue", 400)
    assert "colour" in message and "volume-type" in message


def test_paging_visits_every_volume_once(ec2: Any) -> None:
    marker = uuid.uuid4().hex
    created = {
        new_volume(
            ec2,
            TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": marker, "Value": ""}]}],
        )
        for _ in range(12)
    }
    seen: list[str] = []
    pages = ec2.get_paginator("describe_volumes").paginate(
        Filters=[{"Name": "tag-key", "Values": [marker]}], PaginationConfig={"PageSize": 5}
    )
    sizes = []
    for page in pages:
        sizes.append(len(page["Volumes"]))
        seen.extend(v["VolumeId"] for v in page["Volumes"])
    assert sorted(seen) == sorted(created)
    assert sizes == [5, 5, 2]


def test_max_results_above_the_maximum_is_capped(start_server: ServerFactory) -> None:
    """EC2: "if you specify a value larger than 500, only 500 items are returned"."""
    ec2 = start_server().client()
    for _ in range(503):
        ec2.create_volume(AvailabilityZone=ZONE, Size=1)
    first = ec2.describe_volumes(MaxResults=1000)
    assert len(first["Volumes"]) == 500
    rest = ec2.describe_volumes(MaxResults=1000, NextToken=first["NextToken"])
    assert len(rest["Volumes"]) == 3 and "NextToken" not in rest
    assert len(ec2.describe_volume_status(MaxResults=5000)["VolumeStatuses"]) == 503
    assert ec2.describe_snapshots(OwnerIds=["self"], MaxResults=5000)["Snapshots"] == []
    # Actions that document no cap still refuse a value out of range.
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volumes_modifications(MaxResults=501)
    assert _error(excinfo)[0] == "InvalidParameterValue"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"MaxResults": 2}, "InvalidParameterValue"),
        ({"MaxResults": 5, "VolumeIds": ["vol-0123456789abcdef0"]}, "InvalidParameterCombination"),
        ({"NextToken": "not-a-token"}, "InvalidPaginationToken"),
        ({"VolumeIds": ["vol-0123456789abcdef0"]}, "InvalidVolume.NotFound"),
        ({"VolumeIds": ["volume-1"]}, "InvalidVolumeID.Malformed"),
    ],
)
def test_describe_bad_input(ec2: Any, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volumes(**kwargs)
    assert _error(excinfo)[0] == code
    assert _error(excinfo)[2] == 400


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"Size": 0}, "InvalidParameterValue", "at least 1 GiB"),
        ({"Size": 70000, "VolumeType": "gp3"}, "InvalidParameterValue", "65536"),
        ({"Size": 100, "VolumeType": "st1"}, "InvalidParameterValue", "125"),
        ({"Size": 2000, "VolumeType": "standard"}, "InvalidParameterValue", "1024"),
        ({"Size": 10, "VolumeType": "io1", "Iops": 1000}, "InvalidParameterValue", "maximum is 50"),
        ({"Size": 10, "VolumeType": "io1"}, "MissingParameter", "iops"),
        ({"Size": 10, "VolumeType": "gp3", "Iops": 90000}, "InvalidParameterValue", "80000"),
        ({"Size": 10, "VolumeType": "gp2", "Iops": 300}, "InvalidParameterCombination", "gp2"),
        ({"Size": 10, "VolumeType": "gp2", "Throughput": 300}, "InvalidParameterCombination", ""),
        ({"Size": 10, "VolumeType": "gp3", "Throughput": 99}, "InvalidParameterValue", "125"),
        ({"Size": 10, "VolumeType": "ssd"}, "InvalidParameterValue", "gp3"),
        ({"Size": 10, "MultiAttachEnabled": True}, "InvalidParameterCombination", "io1"),
        ({"Size": 10, "KmsKeyId": "alias/x"}, "InvalidParameterDependency", "Encrypted"),
        ({}, "MissingParameter", "size"),
        ({"Size": 10, "SnapshotId": "snap-0123456789abcdef0"}, "InvalidSnapshot.NotFound", ""),
        ({"Size": 10, "SnapshotId": "nope"}, "InvalidSnapshotID.Malformed", ""),
    ],
)
def test_create_bad_input(ec2: Any, kwargs: dict[str, Any], code: str, words: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, **kwargs)
    got_code, message, status = _error(excinfo)
    assert (got_code, status) == (code, 400), message
    assert words in message


def test_create_in_unknown_zone(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone="us-east-1z", Size=1)
    code, message, _ = _error(excinfo)
    assert code == "InvalidParameterValue" and "us-east-1a" in message


def test_create_by_zone_id(ec2: Any) -> None:
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    volume = ec2.create_volume(AvailabilityZoneId=zones[1]["ZoneId"], Size=1)
    assert volume["AvailabilityZone"] == zones[1]["ZoneName"]
    assert volume["AvailabilityZoneId"] == zones[1]["ZoneId"]
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(
            AvailabilityZone=zones[0]["ZoneName"], AvailabilityZoneId=zones[1]["ZoneId"], Size=1
        )
    assert _error(excinfo)[0] == "InvalidParameterCombination"
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(Size=1)  # type: ignore[call-arg]
    assert _error(excinfo)[:2] == (
        "MissingParameter",
        "The request must contain the parameter AvailabilityZone or AvailabilityZoneId",
    )


def test_delete_volume_goes_through_deleting_and_is_gone(ec2: Any) -> None:
    volume_id = new_volume(ec2)
    ec2.delete_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[volume_id])
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volumes(VolumeIds=[volume_id])
    assert _error(excinfo)[0] == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as excinfo:
        ec2.delete_volume(VolumeId=volume_id)
    assert _error(excinfo)[0] == "InvalidVolume.NotFound"


def test_modify_volume_grows_and_changes_type(ec2: Any) -> None:
    volume_id = new_volume(ec2, 10)
    modification = ec2.modify_volume(VolumeId=volume_id, Size=20, VolumeType="gp3", Iops=5000)[
        "VolumeModification"
    ]
    assert modification["OriginalSize"] == 10 and modification["TargetSize"] == 20
    assert modification["TargetVolumeType"] == "gp3" and modification["TargetIops"] == 5000

    def completed() -> bool:
        found = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
        return bool(found[0]["ModificationState"] == "completed")

    wait_for(completed)
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert (volume["Size"], volume["VolumeType"], volume["Iops"], volume["Throughput"]) == (
        20,
        "gp3",
        5000,
        125,
    )
    found = ec2.describe_volumes_modifications(
        Filters=[{"Name": "volume-id", "Values": [volume_id]}]
    )["VolumesModifications"]
    assert found[0]["Progress"] == 100 and found[0]["EndTime"]


def _modified(ec2: Any, volume_id: str) -> bool:
    found = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    return bool(found[0]["ModificationState"] == "completed")


def test_four_modifications_a_day(ec2: Any) -> None:
    """EBS: "up to four times within a rolling 24-hour period"; the error says when next."""
    volume_id = new_volume(ec2, 10)
    for size in (11, 12, 13, 14):
        ec2.modify_volume(VolumeId=volume_id, Size=size)
        wait_for(lambda: _modified(ec2, volume_id))
    with pytest.raises(ClientError) as excinfo:
        ec2.modify_volume(VolumeId=volume_id, Size=15)
    code, message, status = _error(excinfo)
    assert (code, status) == ("VolumeModificationRateExceeded", 400)
    assert "modified again after" in message
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 14


def test_multi_attach_volumes_keep_their_type_and_io1_its_size(ec2: Any) -> None:
    io2 = new_volume(ec2, 4, VolumeType="io2", Iops=1000, MultiAttachEnabled=True)
    with pytest.raises(ClientError) as excinfo:
        ec2.modify_volume(VolumeId=io2, VolumeType="io1")
    assert _error(excinfo)[0] == "InvalidParameterValue"
    ec2.modify_volume(VolumeId=io2, Size=8)  # io2 Multi-Attach may grow
    wait_for(lambda: _modified(ec2, io2))
    io1 = new_volume(ec2, 4, VolumeType="io1", Iops=100, MultiAttachEnabled=True)
    for change in ({"Size": 8}, {"Iops": 200}):
        with pytest.raises(ClientError) as excinfo:
            ec2.modify_volume(VolumeId=io1, **change)
        assert "Multi-Attach" in _error(excinfo)[1]


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"Size": 5}, "InvalidParameterValue"),
        ({}, "InvalidParameterValue"),
        # io1 defaults to 3,000 IOPS, more than 50 per GiB of a 10 GiB volume allows.
        ({"VolumeType": "io1"}, "InvalidParameterValue"),
        ({"Iops": 4000}, "InvalidParameterCombination"),
    ],
)
def test_modify_bad_input(ec2: Any, kwargs: dict[str, Any], code: str) -> None:
    volume_id = new_volume(ec2, 10)
    with pytest.raises(ClientError) as excinfo:
        ec2.modify_volume(VolumeId=volume_id, **kwargs)
    assert _error(excinfo)[0] == code


def test_volume_status_and_io_attributes(ec2: Any) -> None:
    volume_id = new_volume(ec2, 4, VolumeType="io2", Iops=200)
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "ok"
    assert {"Name": "io-enabled", "Status": "passed"} in status["VolumeStatus"]["Details"]
    assert {"Name": "io-performance", "Status": "normal"} in status["VolumeStatus"]["Details"]
    filtered = ec2.describe_volume_status(
        VolumeIds=[volume_id],
        Filters=[
            {"Name": "volume-status.status", "Values": ["ok"]},
            {"Name": "volume-status.details-status", "Values": ["normal"]},
        ],
    )
    assert [s["VolumeId"] for s in filtered["VolumeStatuses"]] == [volume_id]
    # fakestor raises no scheduled events: the event filters are known and match nothing.
    no_events = ec2.describe_volume_status(
        VolumeIds=[volume_id], Filters=[{"Name": "event.event-type", "Values": ["*"]}]
    )
    assert no_events["VolumeStatuses"] == []

    attribute = ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="autoEnableIO")
    assert attribute["AutoEnableIO"] == {"Value": False}
    ec2.modify_volume_attribute(VolumeId=volume_id, AutoEnableIO={"Value": True})
    attribute = ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="autoEnableIO")
    assert attribute["AutoEnableIO"] == {"Value": True}
    assert (
        ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="productCodes")["ProductCodes"]
        == []
    )
    ec2.enable_volume_io(VolumeId=volume_id)
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="colour")
    assert _error(excinfo)[0] == "InvalidParameterValue"


def test_encryption_by_default(ec2: Any) -> None:
    assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    plain = ec2.create_snapshot(VolumeId=new_volume(ec2, 1))["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[plain])
    assert ec2.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
    try:
        # "The encryption outcome for the snapshot copy depends on the Amazon EBS
        # encryption by default setting" (CopySnapshot): a copy comes out encrypted.
        copy = ec2.copy_snapshot(SourceSnapshotId=plain, SourceRegion="us-east-1")["SnapshotId"]
        copied = ec2.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]
        assert copied["Encrypted"] is True and copied["KmsKeyId"].startswith("arn:aws:kms:")
        volume = ec2.create_volume(AvailabilityZone=ZONE, Size=1)
        assert volume["Encrypted"] is True
        assert volume["KmsKeyId"].startswith("arn:aws:kms:us-east-1:123456789012:key/")
        # As on EC2: with encryption by default on, every new volume is encrypted.
        explicit = ec2.create_volume(AvailabilityZone=ZONE, Size=1, Encrypted=False)
        assert explicit["Encrypted"] is True
    finally:
        assert ec2.disable_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    keyed = ec2.create_volume(AvailabilityZone=ZONE, Size=1, Encrypted=True, KmsKeyId="alias/mine")
    assert keyed["KmsKeyId"] == "alias/mine"


def test_modify_to_io2_defaults_to_3000_iops(ec2: Any) -> None:
    volume_id = new_volume(ec2, 10)
    modification = ec2.modify_volume(VolumeId=volume_id, VolumeType="io2")["VolumeModification"]
    assert (modification["TargetVolumeType"], modification["TargetIops"]) == ("io2", 3000)


def test_modifications_of_an_unmodified_volume(ec2: Any) -> None:
    volume_id = new_volume(ec2)
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volumes_modifications(VolumeIds=[volume_id])
    assert _error(excinfo)[0] == "InvalidVolumeModification.NotFound"


def test_control_characters_are_refused_and_carriage_returns_kept(ec2: Any) -> None:
    volume_id = new_volume(ec2)
    with pytest.raises(ClientError) as excinfo:
        ec2.create_tags(Resources=[volume_id], Tags=[{"Key": "k", "Value": "a\x01b"}])
    assert _error(excinfo)[0] == "InvalidParameterValue"
    ec2.create_tags(Resources=[volume_id], Tags=[{"Key": "k", "Value": "line\r\nnext é"}])
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["Tags"] == [{"Key": "k", "Value": "line\r\nnext é"}]
    ec2.describe_tags()  # everything still parses


def test_paging_tokens_belong_to_their_action(ec2: Any) -> None:
    for _ in range(6):
        new_volume(ec2)
    token = ec2.describe_volumes(MaxResults=5)["NextToken"]
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_snapshots(MaxResults=5, NextToken=token)
    assert _error(excinfo)[0] == "InvalidPaginationToken"
