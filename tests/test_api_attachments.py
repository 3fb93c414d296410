"""Attach and detach through boto3: zones, device names, Multi-Attach, Force, instances."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import OTHER_ZONE, ZONE, Server, fast_waiter, new_volume, wait_for


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def _launch(ec2: Any, zone: str = ZONE) -> str:
    reservation = ec2.run_instances(
        ImageId="ami-00000000000000001",
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": zone},
    )
    instance_id = str(reservation["Instances"][0]["InstanceId"])
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance_id])
    return instance_id


def test_attach_and_detach_the_host(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2)
    attachment = ec2.attach_volume(
        VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdf"
    )
    assert attachment["State"] in ("attaching", "attached")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    wait_for(
        lambda: (
            ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"][0]["State"]
            == "attached"
        )
    )
    by_instance = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [server.host_instance_id]}]
    )
    assert volume_id in {v["VolumeId"] for v in by_instance["Volumes"]}
    instance = ec2.describe_instances(InstanceIds=[server.host_instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assert any(
        m["DeviceName"] == "/dev/sdf" and m["Ebs"]["VolumeId"] == volume_id
        for m in instance["BlockDeviceMappings"]
    )

    with pytest.raises(ClientError) as excinfo:
        ec2.delete_volume(VolumeId=volume_id)
    assert _code(excinfo) == "VolumeInUse"

    detached = ec2.detach_volume(VolumeId=volume_id)
    assert detached["State"] == "detaching"
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"] == []
    ec2.delete_volume(VolumeId=volume_id)


def test_a_volume_attaches_to_one_instance_only(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2)
    other = _launch(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=other, Device="/dev/sdg")
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdh")
    assert _code(excinfo) == "VolumeInUse"
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=other, Device="/dev/sdh")
    assert _code(excinfo) == "VolumeInUse"


def test_multi_attach_io2_to_two_instances(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2, 4, VolumeType="io2", Iops=1000, MultiAttachEnabled=True)
    other = _launch(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=other, Device="/dev/sdf")
    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdp")
    wait_for(
        lambda: (
            [
                a["State"]
                for a in ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
            ]
            == ["attached", "attached"]
        )
    )
    with pytest.raises(ClientError) as excinfo:
        ec2.detach_volume(VolumeId=volume_id)
    assert _code(excinfo) == "MissingParameter"
    ec2.detach_volume(VolumeId=volume_id, InstanceId=other)
    wait_for(
        lambda: len(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]) == 1
    )
    # EC2: "If you are detaching a Multi-Attach enabled volume, you must specify an instance
    # ID", even when one attachment is left.
    with pytest.raises(ClientError) as excinfo:
        ec2.detach_volume(VolumeId=volume_id)
    assert _code(excinfo) == "MissingParameter"
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "in-use"
    ec2.detach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Force=True)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])


def test_zone_mismatch(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2, zone=OTHER_ZONE)
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdf")
    assert _code(excinfo) == "InvalidVolume.ZoneMismatch"
    assert OTHER_ZONE in excinfo.value.response["Error"]["Message"]
    remote = _launch(ec2, OTHER_ZONE)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=remote, Device="/dev/sdf")


def test_device_names_are_validated_and_unique_per_instance(ec2: Any) -> None:
    instance = _launch(ec2)
    first, second = new_volume(ec2), new_volume(ec2)
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=first, InstanceId=instance, Device="/dev/nvme0n1")
    assert _code(excinfo) == "InvalidParameterValue"
    ec2.attach_volume(VolumeId=first, InstanceId=instance, Device="/dev/xvdf")
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=second, InstanceId=instance, Device="/dev/xvdf")
    assert _code(excinfo) == "InvalidParameterValue"
    assert "already in use" in excinfo.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("volume", "instance", "code"),
    [
        ("vol-0123456789abcdef0", "host", "InvalidVolume.NotFound"),
        ("new", "i-0123456789abcdef0", "InvalidInstanceID.NotFound"),
        ("new", "instance-1", "InvalidInstanceID.Malformed"),
        ("bad", "host", "InvalidVolumeID.Malformed"),
    ],
)
def test_attach_unknown_things(
    ec2: Any, server: Server, volume: str, instance: str, code: str
) -> None:
    volume_id = {"new": lambda: new_volume(ec2), "bad": lambda: "vol-xyz"}.get(
        volume, lambda: volume
    )()
    instance_id = server.host_instance_id if instance == "host" else instance
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    assert _code(excinfo) == code


def test_detach_errors(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2)
    with pytest.raises(ClientError) as excinfo:
        ec2.detach_volume(VolumeId=volume_id)
    assert _code(excinfo) == "IncorrectState"
    with pytest.raises(ClientError) as excinfo:
        ec2.detach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id)
    assert _code(excinfo) == "InvalidAttachment.NotFound"
    instance = _launch(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device="/dev/sdk")
    with pytest.raises(ClientError) as excinfo:
        ec2.detach_volume(VolumeId=volume_id, InstanceId=instance, Device="/dev/sdz")
    assert _code(excinfo) == "InvalidAttachment.NotFound"


def test_terminate_instance_releases_its_volumes(ec2: Any, server: Server) -> None:
    instance = _launch(ec2)
    volume_id = new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    result = ec2.terminate_instances(InstanceIds=[instance])["TerminatingInstances"][0]
    assert result["PreviousState"] == {"Code": 16, "Name": "running"}
    assert result["CurrentState"]["Name"] == "shutting-down"
    fast_waiter(ec2, "instance_terminated")(InstanceIds=[instance])
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device="/dev/sdf")
    assert _code(excinfo) == "IncorrectInstanceState"
    with pytest.raises(ClientError) as excinfo:
        ec2.terminate_instances(InstanceIds=[server.host_instance_id])
    assert _code(excinfo) == "OperationNotPermitted"


def test_instances_are_described_and_filtered(ec2: Any, server: Server) -> None:
    instance = _launch(ec2, OTHER_ZONE)
    ec2.create_tags(Resources=[instance], Tags=[{"Key": "role", "Value": "node"}])
    found = ec2.describe_instances(
        Filters=[
            {"Name": "tag:role", "Values": ["node"]},
            {"Name": "availability-zone", "Values": [OTHER_ZONE]},
        ]
    )
    ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    assert instance in ids
    assert server.host_instance_id not in ids
    host = ec2.describe_instances(InstanceIds=[server.host_instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assert host["State"]["Name"] == "running"
    assert host["Placement"]["AvailabilityZone"] == ZONE


def test_concurrent_attaches_of_one_volume_let_exactly_one_win(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2)
    instances = [_launch(ec2) for _ in range(6)]

    def attach(instance_id: str) -> str:
        client = server.client()
        try:
            client.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
        except ClientError as error:
            return str(error.response["Error"]["Code"])
        return "ok"

    with ThreadPoolExecutor(len(instances)) as pool:
        outcomes = sorted(pool.map(attach, instances))
    assert outcomes == ["VolumeInUse"] * 5 + ["ok"]
    attachments = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    assert len(attachments) == 1


def test_sd_and_xvd_names_share_a_slot(ec2: Any) -> None:
    instance = _launch(ec2)
    first, second, third = new_volume(ec2), new_volume(ec2), new_volume(ec2)
    ec2.attach_volume(VolumeId=first, InstanceId=instance, Device="/dev/sdf")
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=second, InstanceId=instance, Device="/dev/xvdf")
    assert _code(excinfo) == "InvalidParameterValue"
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=second, InstanceId=instance, Device="/dev/sdg\n")
    assert _code(excinfo) == "InvalidParameterValue"
    ec2.attach_volume(VolumeId=second, InstanceId=instance, Device="xvdh")
    ec2.attach_volume(VolumeId=third, InstanceId=instance, Device="/dev/xvdba")


def test_run_instances_makes_one_reservation(ec2: Any) -> None:
    reservation = ec2.run_instances(ImageId="ami-00000000000000001", MinCount=3, MaxCount=3)
    launched = [i["InstanceId"] for i in reservation["Instances"]]
    assert [i["AmiLaunchIndex"] for i in reservation["Instances"]] == [0, 1, 2]
    found = ec2.describe_instances(InstanceIds=launched)["Reservations"]
    assert len(found) == 1 and found[0]["ReservationId"] == reservation["ReservationId"]
    assert sorted(i["InstanceId"] for i in found[0]["Instances"]) == sorted(launched)
