"""Every transitional state is observable, and survives a crash of the server.

The metadata backend's --latency makes each data-plane step take time, as real
EBS does, so the states between request and outcome can be seen.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ZONE, ServerFactory, fast_waiter, volume_state, wait_for

LATENCY = "0.8"


def _states(sample: Any, until: str, timeout: float = 20.0) -> list[str]:
    """Distinct values `sample()` takes, in order, until it returns `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = sample()
        if not seen or seen[-1] != value:
            seen.append(value)
        if value == until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"never reached {until}: {seen}")


@pytest.fixture
def slow(start_server: ServerFactory) -> Any:
    return start_server("--latency", LATENCY)


def test_volume_lifecycle_states(slow: Any) -> None:
    ec2 = slow.client()
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    assert _states(lambda: volume_state(ec2, volume_id), "available") == ["creating", "available"]
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "ok"

    ec2.attach_volume(VolumeId=volume_id, InstanceId=slow.host_instance_id, Device="/dev/sdf")

    def attachment_state() -> str:
        attachments = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
        return attachments[0]["State"] if attachments else "none"

    assert volume_state(ec2, volume_id) == "in-use"
    assert _states(attachment_state, "attached") == ["attaching", "attached"]

    ec2.detach_volume(VolumeId=volume_id)
    assert _states(attachment_state, "none") == ["detaching", "none"]
    assert volume_state(ec2, volume_id) == "available"

    ec2.delete_volume(VolumeId=volume_id)
    assert volume_state(ec2, volume_id) == "deleting"
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[volume_id])


def test_snapshot_progress_and_modification_states(slow: Any) -> None:
    ec2 = slow.client()
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]

    def progress() -> str:
        snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        return f"{snapshot['State']} {snapshot['Progress']}"

    seen = _states(progress, "completed 100%")
    assert seen[0] == "pending 0%" and seen[-1] == "completed 100%"
    assert len(seen) >= 3, seen  # some progress in between

    ec2.modify_volume(VolumeId=volume_id, Size=2)

    def modification() -> str:
        found = ec2.describe_volumes_modifications(VolumeIds=[volume_id])
        return str(found["VolumesModifications"][0]["ModificationState"])

    assert _states(modification, "completed") == ["modifying", "optimizing", "completed"]


def test_instance_launch_and_terminate_states(slow: Any) -> None:
    ec2 = slow.client()
    instance = ec2.run_instances(ImageId="ami-00000000000000001", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]
    assert instance["State"]["Name"] == "pending"

    def state() -> str:
        reservations = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])
        return str(reservations["Reservations"][0]["Instances"][0]["State"]["Name"])

    assert _states(state, "running") == ["pending", "running"]


def test_crash_mid_transition_resumes_on_restart(slow: Any) -> None:
    """kill -9 while creating, attaching and snapshotting: the restart finishes all of it."""
    ec2 = slow.client()
    ready = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[ready])
    creating = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=ready, InstanceId=slow.host_instance_id, Device="/dev/sdf")
    snapshot_id = ec2.create_snapshot(VolumeId=ready)["SnapshotId"]
    slow.kill()

    slow.start()
    ec2 = slow.client()
    assert volume_state(ec2, creating) in ("creating", "available")
    fast_waiter(ec2, "volume_available")(VolumeIds=[creating])
    wait_for(
        lambda: (
            ec2.describe_volumes(VolumeIds=[ready])["Volumes"][0]["Attachments"][0]["State"]
            == "attached"
        )
    )
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])


def test_a_busy_volume_does_not_hold_up_others(slow: Any) -> None:
    """Work queued on one volume waits in its own queue, not in the worker pool."""
    ec2 = slow.client()
    busy = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[busy])
    for _ in range(6):
        ec2.create_snapshot(VolumeId=busy)
    started = time.monotonic()
    other = ec2.create_volume(AvailabilityZone="us-east-1b", Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[other])
    # One step of latency, not the six snapshots queued ahead of it on the other volume.
    assert time.monotonic() - started < 3 * float(LATENCY)


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    try:
        return str(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"])
    except ClientError as error:
        return str(error.response["Error"]["Code"])


def test_deleting_a_pending_snapshot_takes_effect_once_it_completes(slow: Any) -> None:
    """As on EBS: the delete is accepted, the snapshot stays `pending`, then it is gone."""
    ec2 = slow.client()
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    with pytest.raises(ClientError, match="DryRunOperation"):
        ec2.delete_snapshot(SnapshotId=snapshot_id, DryRun=True)
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_snapshot(SnapshotId=snapshot_id)  # asking again changes nothing
    seen = _states(lambda: _snapshot_state(ec2, snapshot_id), "InvalidSnapshot.NotFound")
    assert seen == ["pending", "InvalidSnapshot.NotFound"]
    # A snapshot taken without a delete is untouched.
    kept = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[kept])


def test_a_delete_requested_while_pending_survives_a_crash(slow: Any) -> None:
    ec2 = slow.client()
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    slow.kill()

    slow.start()
    ec2 = slow.client()
    _states(lambda: _snapshot_state(ec2, snapshot_id), "InvalidSnapshot.NotFound")
