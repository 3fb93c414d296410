"""Snapshot locks, the archive tier and fast snapshot restore through boto3: every transition
observed as it happens (--time-scale 86400: an EC2 day takes a second, no step under 0.5s),
and resumed after a crash."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import OTHER_ZONE, ZONE, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_cli import aws
from tests.test_transitions import _states

DAY_A_SECOND = ("--time-scale", "86400")


@pytest.fixture
def fast(start_server: ServerFactory) -> Any:
    return start_server(*DAY_A_SECOND)


def _snapshot(ec2: Any) -> str:
    volume_id = new_volume(ec2)
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _lock_state(ec2: Any, snapshot_id: str) -> str:
    found = ec2.describe_locked_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    return str(found[0]["LockState"]) if found else "unlocked"


def test_governance_lock_refuses_delete_until_unlocked(fast: Any) -> None:
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2)
    locked = ec2.lock_snapshot(SnapshotId=snapshot_id, LockMode="governance", LockDuration=30)
    assert locked["LockState"] == "governance" and locked["LockDuration"] == 30
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert _code(refused) == "SnapshotLocked"
    with pytest.raises(ClientError) as refused:
        ec2.modify_snapshot_tier(SnapshotId=snapshot_id, StorageTier="archive")
    assert _code(refused) == "SnapshotLocked"
    ec2.unlock_snapshot(SnapshotId=snapshot_id)
    assert _lock_state(ec2, snapshot_id) == "unlocked"
    ec2.delete_snapshot(SnapshotId=snapshot_id)


def test_compliance_lock_cools_off_then_holds_until_it_expires(fast: Any) -> None:
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2)
    locked = ec2.lock_snapshot(
        SnapshotId=snapshot_id, LockMode="compliance", CoolOffPeriod=1, LockDuration=2
    )
    assert locked["LockState"] == "compliance-cooloff"
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert _code(refused) == "SnapshotLocked"
    seen = _states(lambda: _lock_state(ec2, snapshot_id), "compliance")
    assert seen == ["compliance-cooloff", "compliance"]
    with pytest.raises(ClientError) as refused:
        ec2.unlock_snapshot(SnapshotId=snapshot_id)
    assert _code(refused) == "SnapshotLocked"
    with pytest.raises(ClientError) as refused:
        ec2.lock_snapshot(SnapshotId=snapshot_id, LockMode="compliance", LockDuration=1)
    assert _code(refused) == "SnapshotLocked"  # shortened
    with pytest.raises(ClientError) as refused:
        ec2.lock_snapshot(SnapshotId=snapshot_id, LockMode="governance", LockDuration=5)
    assert _code(refused) == "SnapshotLocked"
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert _code(refused) == "SnapshotLocked"
    assert _states(lambda: _lock_state(ec2, snapshot_id), "expired")[-1] == "expired"
    ec2.delete_snapshot(SnapshotId=snapshot_id)


def test_lock_parameters_are_checked(fast: Any) -> None:
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2)
    combination, value = "InvalidParameterCombination", "InvalidParameterValue"
    for extra, code in [
        ({"LockMode": "governance"}, combination),
        ({"LockMode": "governance", "LockDuration": 1, "CoolOffPeriod": 2}, combination),
        ({"LockMode": "compliance", "LockDuration": 1, "CoolOffPeriod": 73}, value),
        ({"LockMode": "compliance", "LockDuration": 36501}, value),
    ]:
        with pytest.raises(ClientError) as refused:
            ec2.lock_snapshot(SnapshotId=snapshot_id, **extra)
        assert _code(refused) == code, extra
    with pytest.raises(ClientError) as refused:
        ec2.unlock_snapshot(SnapshotId=snapshot_id)
    assert _code(refused) == "IncorrectState"


def _tier(ec2: Any, snapshot_id: str) -> str:
    statuses = ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}]
    )["SnapshotTierStatuses"]
    return f"{statuses[0]['StorageTier']} {statuses[0].get('LastTieringOperationStatus', '-')}"


def test_archive_then_temporary_restore_that_expires(fast: Any) -> None:
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2)
    assert "TieringStartTime" in ec2.modify_snapshot_tier(
        SnapshotId=snapshot_id, StorageTier="archive"
    )
    assert _states(lambda: _tier(ec2, snapshot_id), "archive archival-completed") == [
        "standard archival-in-progress",
        "archive archival-completed",
    ]
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snapshot["StorageTier"] == "archive"
    with pytest.raises(ClientError) as refused:
        ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)
    assert _code(refused) == "IncorrectState"
    with pytest.raises(ClientError) as launch_refused:  # a launch restores volumes too
        ec2.run_instances(
            ImageId="ami-00000000000000001", MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": snapshot_id}}],
        )  # fmt: skip
    assert _code(launch_refused) == "IncorrectState"

    restore = ec2.restore_snapshot_tier(SnapshotId=snapshot_id, TemporaryRestoreDays=2)
    assert restore["RestoreDuration"] == 2 and restore["IsPermanentRestore"] is False
    seen = _states(lambda: _tier(ec2, snapshot_id), "standard temporary-restore-completed")
    assert seen == ["archive temporary-restore-in-progress", "standard temporary-restore-completed"]
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snapshot["StorageTier"] == "standard" and "RestoreExpiryTime" in snapshot
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    # Two EC2 days later the restore expires and the snapshot is archived again.
    assert _states(lambda: _tier(ec2, snapshot_id), "archive archival-completed")[-1] == (
        "archive archival-completed"
    )
    assert (
        "RestoreExpiryTime" not in ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    )

    ec2.restore_snapshot_tier(SnapshotId=snapshot_id, PermanentRestore=True)
    assert _states(lambda: _tier(ec2, snapshot_id), "standard permanent-restore-completed")[0] == (
        "archive permanent-restore-in-progress"
    )
    with pytest.raises(ClientError) as refused:
        ec2.restore_snapshot_tier(SnapshotId=snapshot_id, PermanentRestore=True)
    assert _code(refused) == "IncorrectState"


def _fsr(ec2: Any, snapshot_id: str, zone: str = ZONE) -> str:
    found = ec2.describe_fast_snapshot_restores(
        Filters=[
            {"Name": "snapshot-id", "Values": [snapshot_id]},
            {"Name": "availability-zone", "Values": [zone]},
        ]
    )["FastSnapshotRestores"]
    return str(found[0]["State"]) if found else "none"


def test_fast_snapshot_restore_enable_and_disable(fast: Any) -> None:
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2)
    answer = ec2.enable_fast_snapshot_restores(
        SourceSnapshotIds=[snapshot_id, "snap-00000000000000000"],
        AvailabilityZones=[ZONE, OTHER_ZONE, "us-east-1z"],
    )
    assert {(s["SnapshotId"], s["AvailabilityZone"], s["State"]) for s in answer["Successful"]} == {
        (snapshot_id, ZONE, "enabling"),
        (snapshot_id, OTHER_ZONE, "enabling"),
    }
    errors = {
        (u["SnapshotId"], e["AvailabilityZone"], e["Error"]["Code"])
        for u in answer["Unsuccessful"]
        for e in u["FastSnapshotRestoreStateErrors"]
    }
    assert (snapshot_id, "us-east-1z", "InvalidParameterValue") in errors
    assert ("snap-00000000000000000", ZONE, "InvalidSnapshot.NotFound") in errors
    assert _states(lambda: _fsr(ec2, snapshot_id), "enabled") == [
        "enabling",
        "optimizing",
        "enabled",
    ]
    item = ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"][0]
    assert {"EnablingTime", "OptimizingTime", "EnabledTime"} <= set(item)
    disabled = ec2.disable_fast_snapshot_restores(
        SourceSnapshotIds=[snapshot_id], AvailabilityZones=[ZONE]
    )
    assert disabled["Successful"][0]["State"] == "disabling"
    assert _states(lambda: _fsr(ec2, snapshot_id), "disabled") == ["disabling", "disabled"]
    assert _fsr(ec2, snapshot_id, OTHER_ZONE) == "enabled"


def test_fast_snapshot_restore_refuses_pending_snapshots_and_too_many(
    start_server: ServerFactory,
) -> None:
    slow = start_server(*DAY_A_SECOND, "--latency", "2")
    ec2 = slow.client()
    volume_id = new_volume(ec2)
    pending = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    answer = ec2.enable_fast_snapshot_restores(
        SourceSnapshotIds=[pending], AvailabilityZones=[ZONE]
    )
    error = answer["Unsuccessful"][0]["FastSnapshotRestoreStateErrors"][0]["Error"]
    assert error["Code"] == "IncorrectState" and not answer["Successful"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[pending])
    many = [ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(5)]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=many)
    answer = ec2.enable_fast_snapshot_restores(
        SourceSnapshotIds=[pending, *many], AvailabilityZones=[ZONE]
    )
    assert len(answer["Successful"]) == 5
    assert answer["Unsuccessful"][0]["SnapshotId"] == many[-1]


def test_restart_mid_transition_resumes(fast: Any) -> None:
    ec2 = fast.client()
    archived = _snapshot(ec2)
    restored = _snapshot(ec2)
    ec2.modify_snapshot_tier(SnapshotId=restored, StorageTier="archive")
    wait_for(lambda: _tier(ec2, restored) == "archive archival-completed")
    ec2.modify_snapshot_tier(SnapshotId=archived, StorageTier="archive")
    ec2.restore_snapshot_tier(SnapshotId=restored, PermanentRestore=True)
    ec2.enable_fast_snapshot_restores(SourceSnapshotIds=[archived], AvailabilityZones=[ZONE])
    ec2.lock_snapshot(SnapshotId=archived, LockMode="compliance", CoolOffPeriod=1, LockDuration=9)
    fast.kill()

    fast.start()
    ec2 = fast.client()
    assert _tier(ec2, archived) in ("standard archival-in-progress", "archive archival-completed")
    wait_for(lambda: _tier(ec2, archived) == "archive archival-completed")
    wait_for(lambda: _tier(ec2, restored) == "standard permanent-restore-completed")
    # Archived: its fast snapshot restore, resumed too, ends disabled (EC2 disables it).
    wait_for(lambda: _fsr(ec2, archived) == "disabled")
    wait_for(lambda: _lock_state(ec2, archived) == "compliance")


def test_aws_cli_archives_and_enables_fast_snapshot_restore(fast: Any) -> None:
    snapshot_id = _snapshot(fast.client())
    tiered = aws(
        fast, "modify-snapshot-tier", "--snapshot-id", snapshot_id, "--storage-tier", "archive"
    )
    assert tiered["SnapshotId"] == snapshot_id and "TieringStartTime" in tiered
    wait_for(lambda: _tier(fast.client(), snapshot_id) == "archive archival-completed")
    # An archived snapshot cannot have fast snapshot restore: listed as Unsuccessful.
    answer = aws(
        fast,
        "enable-fast-snapshot-restores",
        "--source-snapshot-ids", snapshot_id,
        "--availability-zones", ZONE,
    )  # fmt: skip
    assert answer["Successful"] == []
    assert answer["Unsuccessful"][0]["SnapshotId"] == snapshot_id
