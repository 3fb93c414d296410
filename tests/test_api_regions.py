"""Regions by signature: each request acts in the region of its SigV4 credential scope, and
every region keeps its own zones, volumes, snapshots, instances and settings."""

from __future__ import annotations

import urllib.parse
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import (
    REGION,
    Server,
    ServerFactory,
    fast_waiter,
    new_volume,
)

EU = "eu-west-1"


def region_client(url: str, region: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries={"max_attempts": 1}),
    )


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def _volume_ids(ec2: Any) -> set[str]:
    return {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}


def _unsigned(url: str, **params: str) -> str:
    body = urllib.parse.urlencode({"Version": "2016-11-15", **params}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body)) as answer:
        return str(answer.read().decode())


def test_each_region_has_its_own_zones_and_volumes(ec2: Any, server: Server) -> None:
    eu = region_client(server.url, EU)
    zones = [z["ZoneName"] for z in eu.describe_availability_zones()["AvailabilityZones"]]
    assert zones == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    with pytest.raises(ClientError) as excinfo:
        eu.create_volume(AvailabilityZone="us-east-1a", Size=1)
    assert _code(excinfo) == "InvalidParameterValue"
    ours = new_volume(eu, zone="eu-west-1b")
    theirs = new_volume(ec2)
    assert ours in _volume_ids(eu) and theirs not in _volume_ids(eu)
    assert theirs in _volume_ids(ec2) and ours not in _volume_ids(ec2)
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_volumes(VolumeIds=[ours])
    assert _code(excinfo) == "InvalidVolume.NotFound"
    # The host instance is the server's region's only.
    with pytest.raises(ClientError) as excinfo:
        eu.attach_volume(VolumeId=ours, InstanceId=server.host_instance_id, Device="/dev/sdf")
    assert _code(excinfo) == "InvalidInstanceID.NotFound"


def test_encryption_by_default_is_per_region(ec2: Any, server: Server) -> None:
    eu = region_client(server.url, EU)
    eu.enable_ebs_encryption_by_default()
    try:
        assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
        volume = eu.create_volume(AvailabilityZone="eu-west-1a", Size=1)
        assert volume["Encrypted"] is True
        assert volume["KmsKeyId"].startswith(f"arn:aws:kms:{EU}:")
        assert ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["Encrypted"] is False
    finally:
        eu.disable_ebs_encryption_by_default()


def test_unsigned_requests_act_in_the_servers_region(start_server: ServerFactory) -> None:
    server = start_server("--region", EU)
    answer = _unsigned(server.url, Action="DescribeAvailabilityZones")
    assert "<zoneName>eu-west-1a</zoneName>" in answer and "us-east-1" not in answer
    eu = region_client(server.url, EU)
    hosts = eu.describe_instances(InstanceIds=[server.host_instance_id])["Reservations"]
    assert hosts[0]["Instances"][0]["Placement"]["AvailabilityZone"] == "eu-west-1a"
    # Signed for us-east-1, the same endpoint answers as us-east-1's: six zones, no host.
    us = region_client(server.url, REGION)
    assert len(us.describe_availability_zones()["AvailabilityZones"]) == 6
    assert "InvalidInstanceID.NotFound" in _describe_error(us, server.host_instance_id)


def _describe_error(ec2: Any, instance_id: str) -> str:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instances(InstanceIds=[instance_id])
    return _code(excinfo)


def test_a_region_ec2_does_not_have_is_refused(server: Server) -> None:
    nowhere = region_client(server.url, "xx-nowhere-1")
    with pytest.raises(ClientError) as excinfo:
        nowhere.describe_volumes()
    assert _code(excinfo) == "AuthFailure"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_describe_regions_lists_ec2s_regions(ec2: Any) -> None:
    regions = {r["RegionName"]: r for r in ec2.describe_regions()["Regions"]}
    for name in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "af-south-1"):
        assert regions[name]["Endpoint"] == f"ec2.{name}.amazonaws.com"
    assert not any(name.startswith("fips-") for name in regions)
    assert regions["eu-west-1"]["OptInStatus"] == "opt-in-not-required"
    assert regions["af-south-1"]["OptInStatus"] == "opted-in"
    assert ec2.describe_regions(AllRegions=True)["Regions"] == list(regions.values())
    named = ec2.describe_regions(RegionNames=["eu-west-1", "us-west-2"])["Regions"]
    assert sorted(r["RegionName"] for r in named) == ["eu-west-1", "us-west-2"]
    opt_in = ec2.describe_regions(Filters=[{"Name": "opt-in-status", "Values": ["opted-in"]}])
    assert "af-south-1" in [r["RegionName"] for r in opt_in["Regions"]]
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_regions(RegionNames=["xx-nowhere-1"])
    assert _code(excinfo) == "InvalidParameterValue"


def test_copy_snapshot_across_regions(ec2: Any, server: Server) -> None:
    eu = region_client(server.url, EU)
    source = ec2.create_snapshot(VolumeId=new_volume(ec2, 3), Description="original")
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[source["SnapshotId"]])
    with pytest.raises(ClientError) as excinfo:  # not in the request's own region
        eu.copy_snapshot(SourceSnapshotId=source["SnapshotId"], SourceRegion=EU)
    assert _code(excinfo) == "InvalidSnapshot.NotFound"
    copied = eu.copy_snapshot(SourceSnapshotId=source["SnapshotId"], SourceRegion=REGION)
    copy_id = copied["SnapshotId"]
    fast_waiter(eu, "snapshot_completed")(SnapshotIds=[copy_id])
    copy = eu.describe_snapshots(SnapshotIds=[copy_id])["Snapshots"][0]
    assert copy["VolumeSize"] == 3
    assert f"from {REGION}" in copy["Description"] and "original" in copy["Description"]
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_snapshots(SnapshotIds=[copy_id])
    assert _code(excinfo) == "InvalidSnapshot.NotFound"
    restored = new_volume(eu, 3, zone="eu-west-1c", SnapshotId=copy_id)
    volume = eu.describe_volumes(VolumeIds=[restored])["Volumes"][0]
    assert (volume["SnapshotId"], volume["Size"]) == (copy_id, 3)
    # An encrypted copy in another region takes that region's key.
    encrypted = eu.copy_snapshot(
        SourceSnapshotId=source["SnapshotId"], SourceRegion=REGION, Encrypted=True
    )
    fast_waiter(eu, "snapshot_completed")(SnapshotIds=[encrypted["SnapshotId"]])
    key = eu.describe_snapshots(SnapshotIds=[encrypted["SnapshotId"]])["Snapshots"][0]["KmsKeyId"]
    assert key.startswith(f"arn:aws:kms:{EU}:")


def test_copy_of_a_pending_snapshot_in_another_region_is_refused(
    start_server: ServerFactory,
) -> None:
    server = start_server("--latency", "1")
    us, eu = region_client(server.url, REGION), region_client(server.url, EU)
    # eu-west-1's first write makes its store and the built-in image's root snapshot there
    # (two backend steps of --latency): done first, so the source is still pending below.
    eu.enable_ebs_encryption_by_default()
    source = us.create_snapshot(VolumeId=new_volume(us))["SnapshotId"]
    with pytest.raises(ClientError) as excinfo:
        eu.copy_snapshot(SourceSnapshotId=source, SourceRegion=REGION)
    assert _code(excinfo) == "IncorrectState"


def test_zone_ids_are_ones_the_region_offers(server: Server) -> None:
    ids = {
        region: [
            (z["ZoneName"][-1], z["ZoneId"])
            for z in region_client(server.url, region).describe_availability_zones()[
                "AvailabilityZones"
            ]
        ]
        for region in ("ap-northeast-1", "us-west-1", "eu-west-1")
    }
    assert ids["ap-northeast-1"] == [("a", "apne1-az1"), ("c", "apne1-az2"), ("d", "apne1-az4")]
    assert ids["us-west-1"] == [("b", "usw1-az1"), ("c", "usw1-az3")]
    assert ids["eu-west-1"] == [("a", "euw1-az1"), ("b", "euw1-az2"), ("c", "euw1-az3")]


def test_reads_of_a_region_never_written_create_no_store(start_server: ServerFactory) -> None:
    server = start_server()
    mumbai = region_client(server.url, "ap-south-1")
    store = server.data_dir / "regions" / "ap-south-1"
    assert mumbai.describe_volumes()["Volumes"] == []
    assert mumbai.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert mumbai.describe_instances()["Reservations"] == []
    zones = mumbai.describe_availability_zones()["AvailabilityZones"]
    assert [z["ZoneName"] for z in zones] == ["ap-south-1a", "ap-south-1b", "ap-south-1c"]
    image = mumbai.describe_images(ImageIds=["ami-00000000000f4e570"])["Images"][0]
    assert mumbai.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    for service, read in (("kms", "list_aliases"), ("cloudwatch", "list_metrics")):
        client = boto3.client(
            service,
            endpoint_url=server.url,
            region_name="ap-south-1",
            aws_access_key_id="AKIDFAKESTOR",
            aws_secret_access_key="fakestor-secret",
        )
        getattr(client, read)()
    assert not store.exists()
    # The first write makes the store, and the image's root snapshot in it, for launches.
    volume_id = new_volume(mumbai, zone="ap-south-1b")
    assert (store / "state.db").exists()
    assert [v["VolumeId"] for v in mumbai.describe_volumes()["Volumes"]] == [volume_id]
    launched = mumbai.run_instances(ImageId="ami-00000000000f4e570", MinCount=1, MaxCount=1)
    instance_id = launched["Instances"][0]["InstanceId"]
    fast_waiter(mumbai, "instance_running")(InstanceIds=[instance_id])
    described = mumbai.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    root = described["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    restored = mumbai.describe_volumes(VolumeIds=[root])["Volumes"][0]["SnapshotId"]
    assert restored == image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    us_image = region_client(server.url, REGION).describe_images(
        ImageIds=["ami-00000000000f4e570"]
    )["Images"][0]
    assert us_image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] != restored  # regional


def test_restart_keeps_every_regions_records(start_server: ServerFactory) -> None:
    server = start_server()
    us, eu = region_client(server.url, REGION), region_client(server.url, EU)
    mine, theirs = new_volume(eu, zone="eu-west-1a"), new_volume(us)
    eu.enable_ebs_encryption_by_default()
    assert server.stop() == 0
    assert (server.data_dir / "regions" / EU / "state.db").exists()
    server.start()
    us, eu = region_client(server.url, REGION), region_client(server.url, EU)
    assert _volume_ids(eu) == {mine} and _volume_ids(us) == {theirs}
    assert eu.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
    assert us.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is False
    assert "reconcile:" not in server.log()
