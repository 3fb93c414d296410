"""EC2 actions on snapshot locks: LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots."""

from __future__ import annotations

from datetime import UTC

from fakestor.control import snapshot_locks
from fakestor.control.context import Ebs
from fakestor.ec2 import views
from fakestor.ec2.actions.common import (
    Params,
    Result,
    action,
    check_paging,
    dry_run_of,
    filters_of,
    page_of,
)


@action
def lock_snapshot(ebs: Ebs, params: Params) -> Result:
    expiration_date = params.get("ExpirationDate")
    if expiration_date is not None and expiration_date.tzinfo is None:
        expiration_date = expiration_date.replace(tzinfo=UTC)
    lock = snapshot_locks.lock_snapshot(
        ebs,
        params["SnapshotId"],
        params["LockMode"],
        cool_off_period=params.get("CoolOffPeriod"),
        lock_duration=params.get("LockDuration"),
        expiration_date=expiration_date,
        dry_run=dry_run_of(params),
    )
    doc = views.snapshot_lock(lock)
    del doc["OwnerId"]
    return doc


@action
def unlock_snapshot(ebs: Ebs, params: Params) -> Result:
    snapshot_locks.unlock_snapshot(ebs, params["SnapshotId"], dry_run=dry_run_of(params))
    return {"SnapshotId": params["SnapshotId"]}


@action
def describe_locked_snapshots(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeLockedSnapshots", params, 5, 1000, "SnapshotIds")
    found = snapshot_locks.describe_locked_snapshots(
        ebs,
        snapshot_ids=params.get("SnapshotIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of(
        "DescribeLockedSnapshots", params, page_size, found, lambda lock: lock.snapshot_id
    )
    return {"Snapshots": [views.snapshot_lock(lock) for lock in page], "NextToken": token}
