"""Control-plane faults through the EC2 API (fault tags) and `fakestor fault` (the server's
own faults), observed with boto3 as a client would see them; they survive a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fakestor.device_names import by_id_path
from tests.conftest import (
    OTHER_ZONE,
    ZONE,
    Server,
    ServerFactory,
    fast_waiter,
    new_volume,
    wait_for,
)
from tests.test_loopdev import machine

FAULT = "fakestor:fault/"


def tag(ec2: Any, resource_id: str, name: str, value: str) -> None:
    ec2.create_tags(Resources=[resource_id], Tags=[{"Key": FAULT + name, "Value": value}])


def untag(ec2: Any, resource_id: str, name: str) -> None:
    ec2.delete_tags(Resources=[resource_id], Tags=[{"Key": FAULT + name}])


def attachment_state(ec2: Any, volume_id: str) -> str:
    attachments = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    return str(attachments[0]["State"]) if attachments else "none"


def snapshot(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    return found


def error_code(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return str(raised.value.response["Error"]["Code"])


def fakestor(
    server: Server, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fakestor", "fault", "--endpoint", server.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(params=["metadata", pytest.param("fuse", marks=pytest.mark.privileged)])
def faulty(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Server]:
    """A server on the metadata backend, and one with real devices (root)."""
    if request.param == "metadata":
        yield start_server()
        return
    with machine(start_server, tmp_path, request.param) as host:
        yield host.server


@pytest.fixture
def plain(start_server: ServerFactory) -> Server:
    """For the server's own faults and the CLI: no devices needed."""
    return start_server()


def device_linked(server: Server, volume_id: str) -> bool:
    """Whether the volume's device link is there (always, on the metadata backend)."""
    return "fuse" not in server.args or os.path.islink(by_id_path(volume_id))


def test_stuck_attach_stays_attaching_until_a_forced_detach(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    tag(ec2, volume_id, "attach", "stuck")
    ec2.attach_volume(VolumeId=volume_id, InstanceId=faulty.host_instance_id, Device="/dev/sdf")
    time.sleep(1.5)
    assert attachment_state(ec2, volume_id) == "attaching"
    assert "fuse" not in faulty.args or not device_linked(faulty, volume_id)
    # A plain detach cannot finish an attach that never did: it waits in 'detaching'.
    ec2.detach_volume(VolumeId=volume_id)
    time.sleep(1.0)
    assert attachment_state(ec2, volume_id) == "detaching"
    ec2.detach_volume(VolumeId=volume_id, Force=True)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])


def test_attach_stuck_for_seconds_completes_even_across_a_restart(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    tag(ec2, volume_id, "attach", "stuck:8")
    started = time.monotonic()
    ec2.attach_volume(VolumeId=volume_id, InstanceId=faulty.host_instance_id, Device="/dev/sdf")
    time.sleep(0.5)
    assert attachment_state(ec2, volume_id) == "attaching"
    faulty.kill()
    faulty.start()
    ec2 = faulty.client()
    assert attachment_state(ec2, volume_id) == "attaching"
    wait_for(lambda: attachment_state(ec2, volume_id) == "attached", timeout=20)
    assert time.monotonic() - started >= 8
    assert device_linked(faulty, volume_id)
    ec2.detach_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])


def test_stuck_detach_stays_detaching_until_forced(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=faulty.host_instance_id, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    tag(ec2, volume_id, "detach", "stuck")
    ec2.detach_volume(VolumeId=volume_id)
    time.sleep(1.5)
    assert attachment_state(ec2, volume_id) == "detaching"
    assert device_linked(faulty, volume_id)  # the device stays, as a busy one would
    ec2.detach_volume(VolumeId=volume_id, Force=True)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])


def test_detach_stuck_for_seconds_completes(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=faulty.host_instance_id, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    tag(ec2, volume_id, "detach", "stuck:2")
    ec2.detach_volume(VolumeId=volume_id)
    time.sleep(0.5)
    assert attachment_state(ec2, volume_id) == "detaching"
    wait_for(lambda: attachment_state(ec2, volume_id) == "none", timeout=10)


def test_snapshot_stuck_at_a_percent_then_failed_by_the_tag(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    tag(ec2, volume_id, "snapshot", "stuck:40")
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_for(lambda: snapshot(ec2, snapshot_id)["Progress"] == "40%")
    time.sleep(1.0)
    assert snapshot(ec2, snapshot_id)["State"] == "pending"
    tag(ec2, volume_id, "snapshot", "error")
    wait_for(lambda: snapshot(ec2, snapshot_id)["State"] == "error")
    # Deleting the tag releases the next ones: they complete.
    untag(ec2, volume_id, "snapshot")
    after = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[after])


def test_stuck_snapshot_completes_once_the_tag_is_deleted(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    tag(ec2, volume_id, "snapshot", "stuck:99")
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_for(lambda: snapshot(ec2, snapshot_id)["Progress"] == "99%")
    untag(ec2, volume_id, "snapshot")
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])


def test_create_ends_in_error(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = ec2.create_volume(
        AvailabilityZone=ZONE,
        Size=1,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": FAULT + "create", "Value": "error"}]}
        ],
    )["VolumeId"]
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "error")
    ec2.delete_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[volume_id])


def test_modification_stuck_in_optimizing_until_the_tag_goes(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    tag(ec2, volume_id, "modify", "stuck")
    ec2.modify_volume(VolumeId=volume_id, Size=2)

    def state() -> str:
        found = ec2.describe_volumes_modifications(VolumeIds=[volume_id])
        return str(found["VolumesModifications"][0]["ModificationState"])

    wait_for(lambda: state() == "optimizing")
    time.sleep(1.5)
    assert state() == "optimizing"
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 2
    untag(ec2, volume_id, "modify")
    wait_for(lambda: state() == "completed")


def test_impaired_volume_status_until_enable_volume_io(faulty: Server) -> None:
    ec2 = faulty.client()
    volume_id = new_volume(ec2)
    tag(ec2, volume_id, "io", "impaired")
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "impaired"
    assert {"Name": "io-enabled", "Status": "failed"} in status["VolumeStatus"]["Details"]
    assert [e["EventType"] for e in status["Events"]] == ["potential-data-inconsistency"]
    assert status["Events"][0]["Description"].startswith("Potential data inconsistency")
    assert [a["Code"] for a in status["Actions"]] == ["enable-volume-io"]
    for name, value in [
        ("event.event-type", "potential-data-inconsistency"),
        ("action.code", "enable-volume-io"),
        ("volume-status.details-status", "failed"),
    ]:
        found = ec2.describe_volume_status(Filters=[{"Name": name, "Values": [value]}])
        assert [s["VolumeId"] for s in found["VolumeStatuses"]] == [volume_id], name
    ec2.enable_volume_io(VolumeId=volume_id)
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "ok"
    assert status["Actions"] == []
    # The tag stays, but the impairment it caused is over, after a restart too.
    faulty.kill()
    faulty.start()
    ec2 = faulty.client()
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "ok"
    untag(ec2, volume_id, "io")
    assert ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]["Events"] == []


def test_bad_fault_tags_are_refused(plain: Server) -> None:
    ec2 = plain.client()
    volume_id = new_volume(ec2)
    for name, value in [
        ("attach", "stuck:soon"),
        ("snapshot", "stuck:140"),
        ("io", "error:sideways"),
        ("io", "error:read:10-5"),
        ("io", "impaired:-1"),
        ("io", "latency:fast"),
        ("io", "gone:now"),
        ("nap", "stuck"),
    ]:
        assert (
            error_code(lambda n=name, v=value: tag(ec2, volume_id, n, v)) == "InvalidParameterValue"
        )
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    assert error_code(lambda: tag(ec2, snapshot_id, "attach", "stuck")) == "InvalidParameterValue"


def test_no_capacity_in_a_zone_or_for_a_type_set_with_the_cli(plain: Server) -> None:
    ec2 = plain.client()
    done = fakestor(plain, "set", f"zone:{ZONE}", "capacity=none")
    assert done.returncode == 0, done.stderr
    assert (
        error_code(lambda: ec2.create_volume(AvailabilityZone=ZONE, Size=1))
        == "InsufficientVolumeCapacity"
    )
    new_volume(ec2, zone=OTHER_ZONE)  # another zone still has room
    assert fakestor(plain, "set", "type:io2", "capacity=none").returncode == 0
    assert (
        error_code(
            lambda: ec2.create_volume(
                AvailabilityZone=OTHER_ZONE, Size=4, VolumeType="io2", Iops=100
            )
        )
        == "InsufficientVolumeCapacity"
    )
    listed = fakestor(plain, "list")
    assert f"zone:{ZONE} capacity=none" in listed.stdout
    assert "type:io2 capacity=none" in listed.stdout
    # Kept in the state store: still there after a restart.
    plain.kill()
    plain.start()
    ec2 = plain.client()
    assert (
        error_code(lambda: ec2.create_volume(AvailabilityZone=ZONE, Size=1))
        == "InsufficientVolumeCapacity"
    )
    assert fakestor(plain, "clear", f"zone:{ZONE}").returncode == 0
    new_volume(ec2)


def _client(server: Server, service: str, retries: dict[str, Any]) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries=retries),
    )


def test_error_rate_for_sdk_retries(plain: Server) -> None:
    assert (
        fakestor(plain, "set", "action:DescribeVolumes", "error-rate=1:Unavailable").returncode == 0
    )
    once = plain.client()
    assert error_code(lambda: once.describe_volumes()) == "Unavailable"
    once.describe_snapshots()  # other actions answer
    assert fakestor(plain, "set", "action:DescribeVolumes", "error-rate=0.5").returncode == 0
    # Half the answers fail; botocore's standard retries get through every time.
    retrying = _client(plain, "ec2", {"max_attempts": 20, "mode": "standard"})
    for _ in range(10):
        retrying.describe_volumes()
    # Both codes answer, at random (a code can run a dozen times in a row: ask until both).
    codes = set()
    for _ in range(400):
        try:
            once.describe_volumes()
        except ClientError as failure:
            codes.add(failure.response["Error"]["Code"])
        if len(codes) == 2:
            break
    assert codes == {"Unavailable", "InternalError"}
    assert fakestor(plain, "clear", "action:DescribeVolumes", "error-rate").returncode == 0
    once.describe_volumes()
    # The EBS direct APIs answer their own 5xx.
    assert fakestor(plain, "set", "action:ListSnapshotBlocks", "error-rate=1").returncode == 0
    direct = _client(plain, "ebs", {"max_attempts": 1})
    assert (
        error_code(lambda: direct.list_snapshot_blocks(SnapshotId="snap-00000000000000001"))
        == "InternalServerException"
    )
    # So does the Recycle Bin.
    assert fakestor(plain, "set", "action:ListRules", "error-rate=1").returncode == 0
    rbin = _client(plain, "rbin", {"max_attempts": 1})
    assert (
        error_code(lambda: rbin.list_rules(ResourceType="EBS_SNAPSHOT"))
        == "InternalServerException"
    )


def test_cli_sets_lists_and_clears_volume_faults(plain: Server) -> None:
    ec2 = plain.client()
    volume_id = new_volume(ec2)
    done = fakestor(plain, "set", volume_id, "attach=stuck:30", "io=latency:5")
    assert done.returncode == 0, done.stderr
    tags = {
        t["Key"]: t["Value"]
        for t in ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Tags"]
    }
    assert tags == {FAULT + "attach": "stuck:30", FAULT + "io": "latency:5"}
    listed = fakestor(plain, "list").stdout
    assert f"{volume_id} attach=stuck:30" in listed
    with urllib.request.urlopen(plain.url + "/ui/state.json") as answer:
        shown = json.load(answer)["faults"]
    assert {"resource_id": volume_id, "name": "attach", "value": "stuck:30"} in shown["tags"]
    assert fakestor(plain, "clear", volume_id, "attach").returncode == 0
    assert f"{volume_id} attach" not in fakestor(plain, "list").stdout
    assert fakestor(plain, "clear", volume_id).returncode == 0
    assert volume_id not in fakestor(plain, "list").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["set", "vol-00000000000000001", "attach=wobbly"],
        ["set", "vol-00000000000000001", "nap=stuck"],
        ["set", "zone:us-east-1a", "capacity=lots"],
        ["set", "action:CreateVolume", "error-rate=2"],
        ["set", "planet:mars", "capacity=none"],
        ["set", "zone:us-east-1a", "capacity"],
        ["set", "vol-00000000000000001", "attach=stuck"],  # no such volume
    ],
)
def test_cli_bad_input_is_one_line_and_fails(plain: Server, args: list[str]) -> None:
    done = fakestor(plain, *args)
    assert done.returncode != 0
    assert done.stderr.startswith("fakestor: ")
    assert done.stderr.count("\n") == 1, done.stderr


def test_cli_signs_its_calls_for_a_server_that_verifies(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("AKIDFAULTS  faults-secret\n")
    server = start_server("--credentials", str(credentials))
    right = {"AWS_ACCESS_KEY_ID": "AKIDFAULTS", "AWS_SECRET_ACCESS_KEY": "faults-secret"}
    done = fakestor(server, "set", f"zone:{ZONE}", "capacity=none", env=right)
    assert done.returncode == 0, done.stderr
    assert f"zone:{ZONE} capacity=none" in fakestor(server, "list", env=right).stdout
    wrong = {**right, "AWS_SECRET_ACCESS_KEY": "not-it"}
    refused = fakestor(server, "clear", f"zone:{ZONE}", env=wrong)
    assert refused.returncode != 0
    assert refused.stderr.startswith("fakestor: ") and refused.stderr.count("\n") == 1
