"""EC2 actions on the archive tier: ModifySnapshotTier, RestoreSnapshotTier,
DescribeSnapshotTierStatus."""

from __future__ import annotations

from fakestor.control import snapshot_tiers
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
def modify_snapshot_tier(ebs: Ebs, params: Params) -> Result:
    started = snapshot_tiers.modify_snapshot_tier(
        ebs,
        params["SnapshotId"],
        params.get("StorageTier", snapshot_tiers.ARCHIVE),
        dry_run=dry_run_of(params),
    )
    return {"SnapshotId": params["SnapshotId"], "TieringStartTime": started}


@action
def restore_snapshot_tier(ebs: Ebs, params: Params) -> Result:
    restore = snapshot_tiers.restore_snapshot_tier(
        ebs,
        params["SnapshotId"],
        temporary_restore_days=params.get("TemporaryRestoreDays"),
        permanent_restore=bool(params.get("PermanentRestore", False)),
        dry_run=dry_run_of(params),
    )
    return {
        "SnapshotId": params["SnapshotId"],
        "RestoreStartTime": restore.start_time,
        "RestoreDuration": restore.days,
        "IsPermanentRestore": restore.permanent,
    }


@action
def describe_snapshot_tier_status(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeSnapshotTierStatus", params, 5, 1000)
    found = snapshot_tiers.describe_snapshot_tier_status(
        ebs, filters=filters_of(params), dry_run=dry_run_of(params)
    )
    page, token = page_of(
        "DescribeSnapshotTierStatus", params, page_size, found, lambda s: s.snapshot.id
    )
    return {
        "SnapshotTierStatuses": [views.snapshot_tier_status(s) for s in page],
        "NextToken": token,
    }
