"""The Recycle Bin for volumes and images through boto3 and the aws CLI (metadata backend):
a deleted volume or deregistered image that an EBS_VOLUME / EC2_IMAGE rule retains leaves
every other use, is listed, restored at once, and purged when its retention ends, also after
kill -9 (volume data through the bin: test_recycle_bin_data.py).

Servers run with --time-scale 604800: an EC2 week (the longest volume retention) is a second."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ZONE, Server, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_recycle_bin import SCALE, _days, _snapshot, fast, rbin_client
from tests.test_cli import aws

BUILT_IN_IMAGE = "ami-00000000000f4e570"
__all__ = ["fast"]  # the fixture, shared with test_api_recycle_bin


def _code(refused: pytest.ExceptionInfo[ClientError]) -> str:
    return str(refused.value.response["Error"]["Code"])


def _volumes_in_bin(ec2: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
    return {v["VolumeId"]: v for v in ec2.list_volumes_in_recycle_bin(**kwargs)["Volumes"]}


def _images_in_bin(ec2: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
    return {i["ImageId"]: i for i in ec2.list_images_in_recycle_bin(**kwargs)["Images"]}


def _volume_exists(ec2: Any, volume_id: str) -> bool:
    try:
        ec2.describe_volumes(VolumeIds=[volume_id])
    except ClientError as error:
        assert error.response["Error"]["Code"] == "InvalidVolume.NotFound"
        return False
    return True


def _image(ec2: Any, snapshot_id: str, name: str) -> str:
    return str(
        ec2.register_image(
            Name=name,
            Description=f"{name} image",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
        )["ImageId"]
    )


def test_deleted_volume_goes_to_the_bin_and_is_restored(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    with pytest.raises(ClientError) as refused:  # volumes are kept 1 to 7 days
        rbin.create_rule(ResourceType="EBS_VOLUME", RetentionPeriod=_days(8))
    assert _code(refused) == "ValidationException"
    rbin.create_rule(
        ResourceType="EBS_VOLUME",
        RetentionPeriod=_days(7),
        ExcludeResourceTags=[{"ResourceTagKey": "scratch", "ResourceTagValue": "yes"}],
    )
    volume_id = new_volume(ec2, 10, VolumeType="gp3", Iops=4000)
    scratch = new_volume(
        ec2,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": "scratch", "Value": "yes"}]}
        ],
    )

    ec2.delete_volume(VolumeId=volume_id)
    ec2.delete_volume(VolumeId=scratch)  # excluded: deleted for good
    assert not _volume_exists(ec2, volume_id)
    assert volume_id not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    binned = _volumes_in_bin(ec2)
    assert list(binned) == [volume_id]
    item = binned[volume_id]
    assert (item["Size"], item["VolumeType"], item["Iops"], item["State"]) == (
        10, "gp3", 4000, "available",
    )  # fmt: skip
    assert item["AvailabilityZone"] == ZONE and item["AvailabilityZoneId"].startswith("use1-")
    kept = (item["RecycleBinExitTime"] - item["RecycleBinEnterTime"]).total_seconds()
    assert abs(kept - 7 * 86400 / SCALE) < 0.01
    assert list(_volumes_in_bin(ec2, VolumeIds=[volume_id, "vol-0123456789abcdef0"])) == [volume_id]
    wait_for(lambda: not _volume_exists(ec2, scratch))

    # In the bin it can only be listed, restored, and tagged.
    with pytest.raises(ClientError) as refused:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=fast.host_instance_id, Device="/dev/sdf")
    assert _code(refused) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as refused:
        ec2.create_snapshot(VolumeId=volume_id)
    assert _code(refused) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as refused:
        ec2.delete_volume(VolumeId=volume_id)
    assert _code(refused) == "InvalidVolume.NotFound"
    ec2.create_tags(Resources=[volume_id], Tags=[{"Key": "while", "Value": "binned"}])
    with pytest.raises(ClientError) as refused:
        ec2.restore_volume_from_recycle_bin(VolumeId=volume_id, DryRun=True)
    assert _code(refused) == "DryRunOperation"

    assert ec2.restore_volume_from_recycle_bin(VolumeId=volume_id)["Return"] is True
    restored = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert restored["State"] == "available" and restored["Size"] == 10
    assert restored["Tags"] == [{"Key": "while", "Value": "binned"}]
    assert _volumes_in_bin(ec2) == {}
    for missing in (volume_id, "vol-0123456789abcdef0"):  # not in the bin, or unknown
        with pytest.raises(ClientError) as refused:
            ec2.restore_volume_from_recycle_bin(VolumeId=missing)
        assert _code(refused) == "InvalidVolume.NotFound"
    with pytest.raises(ClientError) as refused:
        ec2.restore_volume_from_recycle_bin(VolumeId="vol-nothex")
    assert _code(refused) == "InvalidVolumeID.Malformed"
    ec2.attach_volume(VolumeId=volume_id, InstanceId=fast.host_instance_id, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    ec2.detach_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])

    # Deleted again, it is purged when the week (a second) is over.
    ec2.delete_volume(VolumeId=volume_id)
    assert volume_id in _volumes_in_bin(ec2)
    wait_for(lambda: volume_id not in _volumes_in_bin(ec2), timeout=10)
    assert not _volume_exists(ec2, volume_id)
    with pytest.raises(ClientError) as refused:
        ec2.restore_volume_from_recycle_bin(VolumeId=volume_id)
    assert _code(refused) == "InvalidVolume.NotFound"


def test_tag_level_volume_rule_and_termination(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    rbin.create_rule(
        ResourceType="EBS_VOLUME",
        RetentionPeriod=_days(7),
        ResourceTags=[{"ResourceTagKey": "keep", "ResourceTagValue": "true"}],
    )
    kept = [{"ResourceType": "volume", "Tags": [{"Key": "keep", "Value": "true"}]}]
    plain = new_volume(ec2)
    tagged = new_volume(ec2, TagSpecifications=kept)
    ec2.delete_volume(VolumeId=plain)
    ec2.delete_volume(VolumeId=tagged)
    assert list(_volumes_in_bin(ec2)) == [tagged]
    ec2.restore_volume_from_recycle_bin(VolumeId=tagged)
    # A volume whose creation failed is not protected (AWS's considerations for volumes).
    failed = ec2.create_volume(
        AvailabilityZone=ZONE,
        Size=1,
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": [
                    {"Key": "keep", "Value": "true"},
                    {"Key": "fakestor:fault/create", "Value": "error"},
                ],
            }
        ],
    )["VolumeId"]
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[failed])["Volumes"][0]["State"] == "error")
    ec2.delete_volume(VolumeId=failed)
    assert failed not in _volumes_in_bin(ec2)
    wait_for(lambda: not _volume_exists(ec2, failed))

    # A DeleteOnTermination volume is protected too: TerminateInstances bins it.
    launched = ec2.run_instances(ImageId=BUILT_IN_IMAGE, MinCount=1, MaxCount=1)["Instances"][0]
    fast_waiter(ec2, "instance_running")(InstanceIds=[launched["InstanceId"]])
    described = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])
    root = described["Reservations"][0]["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]
    root = root["VolumeId"]
    ec2.create_tags(Resources=[root], Tags=[{"Key": "keep", "Value": "true"}])
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[launched["InstanceId"]])
    wait_for(lambda: root in _volumes_in_bin(ec2))
    assert not _volume_exists(ec2, root)


def test_deregistered_image_goes_to_the_bin_and_is_restored(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    snapshot_id = _snapshot(ec2)
    image_id = _image(ec2, snapshot_id, "binned-image")
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": "team", "Value": "a"}])
    rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(365))
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(365))

    ec2.deregister_image(ImageId=image_id)
    assert image_id not in {i["ImageId"] for i in ec2.describe_images()["Images"]}
    with pytest.raises(ClientError) as refused:
        ec2.describe_images(ImageIds=[image_id])
    assert _code(refused) == "InvalidAMIID.NotFound"
    item = _images_in_bin(ec2)[image_id]
    assert item["Name"] == "binned-image" and item["Description"] == "binned-image image"
    kept = (item["RecycleBinExitTime"] - item["RecycleBinEnterTime"]).total_seconds()
    assert abs(kept - 365 * 86400 / SCALE) < 0.01
    assert list(_images_in_bin(ec2, ImageIds=[image_id, "ami-0123456789abcdef0"])) == [image_id]
    # Not launchable while in the bin; its snapshot is not binned with it.
    with pytest.raises(ClientError) as refused:
        ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)
    assert _code(refused) == "InvalidAMIID.NotFound"
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == (
        "completed"
    )
    # Its snapshot deleted to the bin: the image cannot come back before the snapshot.
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    with pytest.raises(ClientError) as refused:
        ec2.restore_image_from_recycle_bin(ImageId=image_id)
    assert _code(refused) == "IncorrectState"
    ec2.restore_snapshot_from_recycle_bin(SnapshotId=snapshot_id)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    with pytest.raises(ClientError) as refused:
        ec2.restore_image_from_recycle_bin(ImageId=image_id, DryRun=True)
    assert _code(refused) == "DryRunOperation"

    assert ec2.restore_image_from_recycle_bin(ImageId=image_id)["Return"] is True
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["Tags"] == [{"Key": "team", "Value": "a"}]
    assert _images_in_bin(ec2) == {}
    for missing in (image_id, "ami-0123456789abcdef0"):
        with pytest.raises(ClientError) as refused:
            ec2.restore_image_from_recycle_bin(ImageId=missing)
        assert _code(refused) == "InvalidAMIID.NotFound"
    launched = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    fast_waiter(ec2, "instance_running")(InstanceIds=[launched["InstanceId"]])


def test_image_purged_when_retention_ends_keeps_its_snapshot(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    snapshot_id = _snapshot(ec2)
    image_id = _image(ec2, snapshot_id, "short-lived")
    rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(1))
    ec2.deregister_image(ImageId=image_id)
    assert image_id in _images_in_bin(ec2)
    wait_for(lambda: image_id not in _images_in_bin(ec2), timeout=10)
    with pytest.raises(ClientError) as refused:
        ec2.restore_image_from_recycle_bin(ImageId=image_id)
    assert _code(refused) == "InvalidAMIID.NotFound"
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == (
        "completed"
    )
    # A locked rule still retains: LockRule applies to every resource type.
    rule = rbin.create_rule(
        ResourceType="EC2_IMAGE",
        RetentionPeriod=_days(30),
        LockConfiguration={"UnlockDelay": {"UnlockDelayValue": 7, "UnlockDelayUnit": "DAYS"}},
    )
    assert rule["LockState"] == "locked"
    second = _image(ec2, snapshot_id, "under-a-locked-rule")
    ec2.deregister_image(ImageId=second)
    assert second in _images_in_bin(ec2)


def test_tag_level_image_rule(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    snapshot_id = _snapshot(ec2)
    kept, plain = _image(ec2, snapshot_id, "tagged"), _image(ec2, snapshot_id, "untagged")
    ec2.create_tags(Resources=[kept], Tags=[{"Key": "keep", "Value": "yes"}])
    rbin.create_rule(
        ResourceType="EC2_IMAGE",
        RetentionPeriod=_days(365),
        ResourceTags=[{"ResourceTagKey": "keep", "ResourceTagValue": "yes"}],
    )
    ec2.deregister_image(ImageId=kept)
    ec2.deregister_image(ImageId=plain)
    assert list(_images_in_bin(ec2)) == [kept]
    # Tags can change while it is in the bin; Amazon's images can be tagged too.
    ec2.create_tags(Resources=[kept, BUILT_IN_IMAGE], Tags=[{"Key": "seen", "Value": "1"}])
    image = ec2.describe_images(ImageIds=[BUILT_IN_IMAGE])["Images"][0]
    assert image["Tags"] == [{"Key": "seen", "Value": "1"}]
    ec2.restore_image_from_recycle_bin(ImageId=kept)
    tags = ec2.describe_images(ImageIds=[kept])["Images"][0]["Tags"]
    assert tags == [{"Key": "keep", "Value": "yes"}, {"Key": "seen", "Value": "1"}]
    with pytest.raises(ClientError) as refused:
        ec2.describe_images(ImageIds=[plain])
    assert _code(refused) == "InvalidAMIID.NotFound"


def test_volume_and_image_purges_resume_after_kill(start_server: ServerFactory) -> None:
    server = start_server("--time-scale", "86400")  # a day a second: 7 s in the bin
    rbin, ec2 = rbin_client(server.url), server.client()
    rbin.create_rule(ResourceType="EBS_VOLUME", RetentionPeriod=_days(7))
    rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(8))
    volume_id, restored_id = new_volume(ec2), new_volume(ec2)
    image_id = _image(ec2, _snapshot(ec2), "resumed")
    for victim in (volume_id, restored_id):
        ec2.delete_volume(VolumeId=victim)
    ec2.deregister_image(ImageId=image_id)
    exit_time = _volumes_in_bin(ec2)[volume_id]["RecycleBinExitTime"]
    server.kill()
    server.start()
    ec2 = server.client()
    assert _volumes_in_bin(ec2)[volume_id]["RecycleBinExitTime"] == exit_time
    assert image_id in _images_in_bin(ec2)
    ec2.restore_volume_from_recycle_bin(VolumeId=restored_id)
    wait_for(lambda: not _volumes_in_bin(ec2) and not _images_in_bin(ec2), timeout=20)
    wait_for(lambda: not _volume_exists(ec2, volume_id))
    remaining = {v["VolumeId"]: v["State"] for v in ec2.describe_volumes()["Volumes"]}
    assert remaining[restored_id] == "available" and volume_id not in remaining
    assert "Traceback" not in server.log(), server.log()


def test_aws_cli_volume_rule_and_bin(start_server: ServerFactory) -> None:
    fast = start_server("--time-scale", "3600")  # the CLI is slow to start: 7 days, 168 s
    created = aws(
        fast,
        "create-rule",
        "--resource-type", "EBS_VOLUME",
        "--retention-period", "RetentionPeriodValue=7,RetentionPeriodUnit=DAYS",
        service="rbin",
    )  # fmt: skip
    assert created["ResourceType"] == "EBS_VOLUME"
    ec2 = fast.client()
    volume_id = new_volume(ec2)
    aws(fast, "delete-volume", "--volume-id", volume_id)
    listed = aws(fast, "list-volumes-in-recycle-bin")
    assert [v["VolumeId"] for v in listed["Volumes"]] == [volume_id]
    assert aws(fast, "restore-volume-from-recycle-bin", "--volume-id", volume_id)["Return"]
    assert aws(fast, "list-volumes-in-recycle-bin", "--volume-id", volume_id)["Volumes"] == []
