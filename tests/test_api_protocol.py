"""Protocol-level behaviour: tags, zones, regions, DryRun, permissions and bad requests."""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import REGION, ZONE, Server, ServerFactory, new_volume


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def _post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_tags_create_describe_delete(ec2: Any) -> None:
    key = f"team-{uuid.uuid4().hex[:8]}"
    volume_id = new_volume(ec2)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    ec2.create_tags(
        Resources=[volume_id, snapshot_id],
        Tags=[{"Key": key, "Value": "storage"}, {"Key": f"{key}-cost", "Value": "42"}],
    )
    found = ec2.describe_tags(Filters=[{"Name": "key", "Values": [f"{key}*"]}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"], t["Key"]) for t in found} == {
        (volume_id, "volume", key),
        (volume_id, "volume", f"{key}-cost"),
        (snapshot_id, "snapshot", key),
        (snapshot_id, "snapshot", f"{key}-cost"),
    }
    only_volumes = ec2.describe_tags(
        Filters=[
            {"Name": "key", "Values": [key]},
            {"Name": "resource-type", "Values": ["volume"]},
        ]
    )["Tags"]
    assert [t["ResourceId"] for t in only_volumes] == [volume_id]
    ec2.delete_tags(Resources=[volume_id], Tags=[{"Key": key, "Value": "not-the-value"}])
    assert (
        len(ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [volume_id]}])["Tags"])
        == 2
    )
    ec2.delete_tags(Resources=[volume_id], Tags=[{"Key": key}])
    remaining = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [volume_id]}])["Tags"]
    assert [t["Key"] for t in remaining] == [f"{key}-cost"]
    ec2.delete_tags(Resources=[volume_id])
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [volume_id]}])["Tags"] == []


@pytest.mark.parametrize(
    ("resources", "tags", "code"),
    [
        (["vol-0123456789abcdef0"], [{"Key": "a", "Value": "b"}], "InvalidVolume.NotFound"),
        (["sg-12345678"], [{"Key": "a", "Value": "b"}], "InvalidID"),
        ("volume", [{"Key": "aws:reserved", "Value": "b"}], "InvalidParameterValue"),
        ("volume", [{"Key": "k" * 129, "Value": "b"}], "InvalidParameterValue"),
        ("volume", [{"Key": f"k{i}", "Value": ""} for i in range(51)], "TagLimitExceeded"),
    ],
)
def test_bad_tags(ec2: Any, resources: Any, tags: list[dict[str, str]], code: str) -> None:
    if resources == "volume":
        resources = [new_volume(ec2)]
    with pytest.raises(ClientError) as excinfo:
        ec2.create_tags(Resources=resources, Tags=tags)
    assert _code(excinfo) == code


def test_zones_and_regions(ec2: Any) -> None:
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    # EC2's own: us-east-1 has six zones.
    assert [z["ZoneName"] for z in zones] == [f"us-east-1{letter}" for letter in "abcdef"]
    assert [z["ZoneId"] for z in zones] == [f"use1-az{n}" for n in range(1, 7)]
    assert all(z["State"] == "available" and z["RegionName"] == REGION for z in zones)
    one = ec2.describe_availability_zones(Filters=[{"Name": "zone-id", "Values": ["use1-az2"]}])
    assert [z["ZoneName"] for z in one["AvailabilityZones"]] == ["us-east-1b"]
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_availability_zones(ZoneNames=["us-east-1q"])
    assert _code(excinfo) == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_availability_zones(ZoneIds=["use1-az9"])
    assert _code(excinfo) == "InvalidParameterValue"
    regions = ec2.describe_regions()["Regions"]
    assert REGION in [r["RegionName"] for r in regions]
    other = ec2.describe_regions(Filters=[{"Name": "region-name", "Values": ["xx-*"]}])
    assert other["Regions"] == []


def test_dry_run_validates_and_changes_nothing(ec2: Any, server: Server) -> None:
    before = len(ec2.describe_volumes()["Volumes"])
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, Size=1, DryRun=True)
    assert _code(excinfo) == "DryRunOperation"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert len(ec2.describe_volumes()["Volumes"]) == before
    # A DryRun of an invalid request reports the real error, not DryRunOperation.
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, Size=0, DryRun=True)
    assert _code(excinfo) == "InvalidParameterValue"
    volume_id = new_volume(ec2)
    for call in (
        lambda: ec2.delete_volume(VolumeId=volume_id, DryRun=True),
        lambda: ec2.attach_volume(
            VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdx", DryRun=True
        ),
        lambda: ec2.create_snapshot(VolumeId=volume_id, DryRun=True),
        lambda: ec2.create_tags(
            Resources=[volume_id], Tags=[{"Key": "a", "Value": ""}], DryRun=True
        ),
        lambda: ec2.describe_volumes(DryRun=True),
        lambda: ec2.modify_volume(VolumeId=volume_id, Size=2, DryRun=True),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _code(excinfo) == "DryRunOperation"
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert (volume["State"], volume["Size"], volume.get("Tags")) == ("available", 1, None)


def test_denied_actions_are_unauthorized(start_server: ServerFactory) -> None:
    denied = start_server("--deny", "DeleteVolume", "--deny", "*Snapshot*")
    ec2 = denied.client()
    volume_id = new_volume(ec2)
    for call in (
        lambda: ec2.delete_volume(VolumeId=volume_id),
        lambda: ec2.delete_volume(VolumeId=volume_id, DryRun=True),
        lambda: ec2.create_snapshot(VolumeId=volume_id, DryRun=True),
        lambda: ec2.describe_snapshots(),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _code(excinfo) == "UnauthorizedOperation"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    ec2.describe_volumes(VolumeIds=[volume_id])


def test_unknown_and_unimplemented_actions(server: Server) -> None:
    status, body = _post(server.url, b"Action=LaunchRockets&Version=2016-11-15")
    assert status == 400 and "<Code>InvalidAction</Code>" in body
    status, body = _post(server.url, b"Action=CreateVpc&Version=2016-11-15&CidrBlock=10.0.0.0/16")
    assert status == 400 and "<Code>InvalidAction</Code>" in body
    status, body = _post(server.url, b"Version=2016-11-15")
    assert status == 400 and "<Code>MissingAction</Code>" in body


def test_query_via_get(server: Server) -> None:
    query = urllib.parse.urlencode({"Action": "DescribeRegions", "Version": "2016-11-15"})
    with urllib.request.urlopen(f"{server.url}/?{query}") as response:
        assert response.status == 200
        assert b"<regionName>us-east-1</regionName>" in response.read()


def test_malformed_requests_get_ec2_errors_not_500s(server: Server) -> None:
    cases = {
        b"Action=CreateVolume&AvailabilityZone=us-east-1a&Size=big": "InvalidParameterValue",
        b"Action=CreateVolume&AvailabilityZone=us-east-1a&Size=1&Shape=round": "UnknownParameter",
        b"Action=DescribeVolumes&Filter.1.Value.1=x": "MissingParameter",
        b"Action=DescribeVolumes&Filter.one.Name=x": "UnknownParameter",
        b"Action=AttachVolume&VolumeId=vol-0123456789abcdef0": "MissingParameter",
        b"Action=DescribeVolumes&MaxResults=-1": "InvalidParameterValue",
        b"Action=DescribeVolumes&VolumeId=vol-1&VolumeId.1=vol-2": "InvalidParameterValue",
        b"Action=CreateVolume&AvailabilityZone=us-east-1a&Size=1&Encrypted=maybe": (
            "InvalidParameterValue"
        ),
        b"Action=CreateVolume&%ff%fe=1": "UnknownParameter",
        b"Action=DescribeVolumes&Filter.%C2%B2.Name=status": "UnknownParameter",
        b"Action=CreateVolume&AvailabilityZone=us-east-1a&Size=%EF%BC%91": "InvalidParameterValue",
        b"Action=CreateVolume&AvailabilityZone=us-east-1a&Size=1_0": "InvalidParameterValue",
        b"Action=DescribeVolumes&DryRun=%01": "InvalidParameterValue",
    }
    for body, code in cases.items():
        status, text = _post(server.url, body)
        assert (status, f"<Code>{code}</Code>" in text) == (400, True), (body, text)
        assert "Traceback" not in text


def test_oversized_request_is_refused(server: Server) -> None:
    status, body = _post(server.url, b"Action=DescribeVolumes&Filter.1.Name=" + b"x" * 2_000_000)
    assert status == 413
    assert "<Code>RequestEntityTooLarge</Code>" in body
    # The server still answers afterwards.
    status, _ = _post(server.url, b"Action=DescribeRegions")
    assert status == 200


def test_huge_declared_body_is_refused_before_it_is_read(server: Server) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 500000000\r\n\r\n" + b"x" * 65536
        )
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
