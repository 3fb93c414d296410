"""Instances as EBS sees them: launches with block-device mappings, images, stop and start,
instance attributes and termination, through boto3 and the aws CLI."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Server, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_cli import aws
from tests.test_loopdev import require_backend

BUILTIN_IMAGE = "ami-00000000000f4e570"


def _launch(ec2: Any, **extra: Any) -> dict[str, Any]:
    instance: dict[str, Any] = ec2.run_instances(MinCount=1, MaxCount=1, **extra)["Instances"][0]
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance["InstanceId"]])
    return instance


def _devices(ec2: Any, instance_id: str) -> dict[str, dict[str, Any]]:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {m["DeviceName"]: m["Ebs"] for m in found["BlockDeviceMappings"]}


def _volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    volume: dict[str, Any] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return volume


def test_the_built_in_images_are_listed(ec2: Any) -> None:
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    ebs_backed = next(i for i in images if i["ImageId"] == BUILTIN_IMAGE)
    assert ebs_backed["RootDeviceName"] == "/dev/xvda"
    assert ebs_backed["RootDeviceType"] == "ebs"
    assert ebs_backed["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 8
    with pytest.raises(ClientError) as missing:
        ec2.describe_images(ImageIds=["ami-0123456789abcdef0"])
    assert missing.value.response["Error"]["Code"] == "InvalidAMIID.NotFound"


def _builtin_root_snapshot(ec2: Any) -> str:
    image = ec2.describe_images(ImageIds=[BUILTIN_IMAGE])["Images"][0]
    snapshot_id: str = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    return snapshot_id


def test_the_built_in_images_root_restores_from_amazons_snapshot(ec2: Any) -> None:
    snapshot_id = _builtin_root_snapshot(ec2)
    assert snapshot_id.startswith("snap-")
    instance_id = _launch(ec2, ImageId=BUILTIN_IMAGE)["InstanceId"]
    root = wait_for(lambda: _devices(ec2, instance_id).get("/dev/xvda"))
    volume = _volume(ec2, root["VolumeId"])
    assert (volume["SnapshotId"], volume["Size"]) == (snapshot_id, 8)
    # Amazon's snapshot, not the account's: no listing shows it, nor does its id.
    for owners in ([], ["self"], ["amazon"]):
        listed = ec2.describe_snapshots(OwnerIds=owners)["Snapshots"]
        assert snapshot_id not in [s["SnapshotId"] for s in listed]
    with pytest.raises(ClientError) as hidden:
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    assert hidden.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as not_restorable:
        ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)
    assert not_restorable.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    with pytest.raises(ClientError) as not_deletable:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert not_deletable.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    ec2.terminate_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[root["VolumeId"]])


def test_a_launch_makes_and_attaches_its_volumes(ec2: Any) -> None:
    source = new_volume(ec2, 3)
    snapshot_id = ec2.create_snapshot(VolumeId=source)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    instance = _launch(
        ec2,
        ImageId=BUILTIN_IMAGE,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 10, "VolumeType": "gp3"}},
            {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": snapshot_id}},
            {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 2, "DeleteOnTermination": False}},
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        ],
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": "team", "Value": "storage"}]},
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web"}]},
        ],
    )
    instance_id = instance["InstanceId"]
    assert instance["RootDeviceName"] == "/dev/xvda"
    devices = wait_for(lambda: (d := _devices(ec2, instance_id)) and len(d) == 3 and d)
    wait_for(lambda: all(d["Status"] == "attached" for d in _devices(ec2, instance_id).values()))
    root, restored, extra = (devices[name]["VolumeId"] for name in ("/dev/xvda", "/dev/sdf",
                                                                    "/dev/sdg"))  # fmt: skip
    assert _volume(ec2, root)["Size"] == 10 and _volume(ec2, root)["VolumeType"] == "gp3"
    assert _volume(ec2, restored)["SnapshotId"] == snapshot_id
    assert _volume(ec2, restored)["Size"] == 3
    for volume_id in (root, restored, extra):
        volume = _volume(ec2, volume_id)
        assert volume["State"] == "in-use"
        assert {"Key": "team", "Value": "storage"} in volume["Tags"]
    assert devices["/dev/xvda"]["DeleteOnTermination"] is True
    assert devices["/dev/sdg"]["DeleteOnTermination"] is False

    # The root volume stays while the instance runs; stopped, it may be detached.
    with pytest.raises(ClientError) as refused:
        ec2.detach_volume(VolumeId=root)
    assert "root volume" in refused.value.response["Error"]["Message"]
    ec2.stop_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[instance_id])
    assert len(_devices(ec2, instance_id)) == 3  # volumes stay attached while stopped
    ec2.start_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance_id])

    # ModifyInstanceAttribute flips DeleteOnTermination, and termination honours it.
    ec2.modify_instance_attribute(
        InstanceId=instance_id,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": False}}],
    )
    attribute = ec2.describe_instance_attribute(
        InstanceId=instance_id, Attribute="blockDeviceMapping"
    )["BlockDeviceMappings"]
    assert {m["DeviceName"]: m["Ebs"]["DeleteOnTermination"] for m in attribute} == {
        "/dev/xvda": True, "/dev/sdf": False, "/dev/sdg": False,
    }  # fmt: skip
    ec2.terminate_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[instance_id])
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[root])
    for kept in (restored, extra):
        assert _volume(ec2, kept)["State"] == "available"
        assert _volume(ec2, kept)["Attachments"] == []


def test_termination_protection_and_instance_type_changes(ec2: Any) -> None:
    instance_id = _launch(ec2, ImageId=BUILTIN_IMAGE, DisableApiTermination=True)["InstanceId"]
    with pytest.raises(ClientError) as protected:
        ec2.terminate_instances(InstanceIds=[instance_id])
    assert protected.value.response["Error"]["Code"] == "OperationNotPermitted"
    with pytest.raises(ClientError) as running:
        ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m5.xlarge"})
    assert running.value.response["Error"]["Code"] == "IncorrectInstanceState"
    ec2.stop_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "instance_stopped")(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m5.xlarge"})
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})
    assert (
        ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceType")[
            "InstanceType"
        ]["Value"]
        == "m5.xlarge"
    )
    ec2.terminate_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[instance_id])


def test_an_image_registered_from_a_snapshot_launches_its_root_from_it(ec2: Any) -> None:
    source = new_volume(ec2, 4)
    snapshot_id = ec2.create_snapshot(VolumeId=source)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    image_id = ec2.register_image(
        Name=f"golden-{source}",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]
    assert ec2.describe_images(Owners=["self"], ImageIds=[image_id])["Images"][0]["Name"]
    instance_id = _launch(ec2, ImageId=image_id)["InstanceId"]
    root = wait_for(lambda: _devices(ec2, instance_id).get("/dev/xvda"))
    assert _volume(ec2, root["VolumeId"])["SnapshotId"] == snapshot_id
    ec2.terminate_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[root["VolumeId"]])
    ec2.deregister_image(ImageId=image_id)
    assert image_id not in [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]


def test_instance_metadata_lists_the_launch_devices(ec2: Any, server: Server) -> None:
    instance_id = _launch(
        ec2,
        ImageId=BUILTIN_IMAGE,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}},
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        ],
    )["InstanceId"]
    base = f"{server.url}/instances/{instance_id}/latest/meta-data/block-device-mapping/"

    def read(path: str) -> str:
        with urllib.request.urlopen(base + path) as response:
            return str(response.read().decode())

    assert sorted(read("").split()) == ["ami", "ebs1", "ephemeral0", "root"]
    assert read("ami") == "/dev/xvda" and read("root") == "/dev/xvda"
    assert read("ebs1") == "sdf" and read("ephemeral0") == "sdb"
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_the_aws_cli_launches_with_mappings_and_waits(server: Server, tmp_path: Path) -> None:
    mappings = tmp_path / "mappings.json"
    mappings.write_text(
        json.dumps([{"DeviceName": "/dev/sdh", "Ebs": {"VolumeSize": 5, "VolumeType": "gp3"}}])
    )
    launched = aws(
        server, "run-instances", "--image-id", BUILTIN_IMAGE, "--count", "1",
        "--block-device-mappings", f"file://{mappings}",
    )  # fmt: skip
    instance_id = launched["Instances"][0]["InstanceId"]
    aws(server, "wait", "instance-running", "--instance-ids", instance_id)
    aws(server, "stop-instances", "--instance-ids", instance_id)
    aws(server, "wait", "instance-stopped", "--instance-ids", instance_id)
    described = aws(server, "describe-instances", "--instance-ids", instance_id)
    devices = described["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]
    assert sorted(d["DeviceName"] for d in devices) == ["/dev/sdh", "/dev/xvda"]
    aws(server, "terminate-instances", "--instance-ids", instance_id)
    aws(server, "wait", "instance-terminated", "--instance-ids", instance_id)


@pytest.mark.privileged
def test_a_launch_on_loopdev_creates_real_volume_data(start_server: ServerFactory) -> None:
    require_backend("loopdev")
    server = start_server(backend="loopdev")
    ec2 = server.client()
    root_snapshot = _builtin_root_snapshot(ec2)
    snapshot_image = server.data_dir / "snapshots" / f"{root_snapshot}.img"
    assert snapshot_image.stat().st_size == 8 * 1024**3  # real (sparse) data, made at start
    made = snapshot_image.stat().st_mtime_ns
    instance_id = _launch(
        ec2,
        ImageId=BUILTIN_IMAGE,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}}],
    )["InstanceId"]
    devices = wait_for(lambda: (d := _devices(ec2, instance_id)) and len(d) == 2 and d)
    images = {m["VolumeId"]: server.data_dir / "volumes" / f"{m['VolumeId']}.img"
              for m in devices.values()}  # fmt: skip
    wait_for(lambda: all(image.exists() for image in images.values()))
    sizes = {
        _volume(ec2, v)["Size"] * 1024**3 == image.stat().st_size for v, image in images.items()
    }
    assert sizes == {True}
    assert _volume(ec2, devices["/dev/xvda"]["VolumeId"])["SnapshotId"] == root_snapshot
    ec2.terminate_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "volume_deleted")(VolumeIds=list(images))
    wait_for(lambda: not any(image.exists() for image in images.values()))
    # A restart keeps the one snapshot (same id, data untouched) and reconciles it quietly.
    assert server.stop() == 0
    server.start()
    assert _builtin_root_snapshot(server.client()) == root_snapshot
    assert snapshot_image.stat().st_mtime_ns == made
    assert "reconcile:" not in server.log()
    # Its data lost while stopped: reconcile marks it, and the start makes it again.
    assert server.stop() == 0
    snapshot_image.unlink()
    server.start()
    assert snapshot_image.stat().st_size == 8 * 1024**3
    relaunched = _launch(server.client(), ImageId=BUILTIN_IMAGE)["InstanceId"]
    root = wait_for(lambda: _devices(server.client(), relaunched).get("/dev/xvda"))
    assert _volume(server.client(), root["VolumeId"])["SnapshotId"] == root_snapshot
    server.client().terminate_instances(InstanceIds=[relaunched])
    fast_waiter(server.client(), "volume_deleted")(VolumeIds=[root["VolumeId"]])


def test_an_instance_reports_its_types_architecture(ec2: Any) -> None:
    graviton = _launch(ec2, ImageId="ami-00000000000000001", InstanceType="m7g.large")
    assert graviton["Architecture"] == "arm64"
    intel = _launch(ec2, ImageId="ami-00000000000000001", InstanceType="m5.large")
    assert intel["Architecture"] == "x86_64"
    ec2.terminate_instances(InstanceIds=[graviton["InstanceId"], intel["InstanceId"]])
