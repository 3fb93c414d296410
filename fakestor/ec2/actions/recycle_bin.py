"""EC2 actions on the Recycle Bin: ListSnapshotsInRecycleBin, RestoreSnapshotFromRecycleBin."""

from __future__ import annotations

from fakestor.control import recycle_bin
from fakestor.control.context import Ebs
from fakestor.ec2.actions.common import Params, Result, action, check_paging, dry_run_of, page_of


@action
def list_snapshots_in_recycle_bin(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("ListSnapshotsInRecycleBin", params, 5, 1000)
    found = recycle_bin.list_snapshots_in_recycle_bin(
        ebs, snapshot_ids=params.get("SnapshotIds", []), dry_run=dry_run_of(params)
    )
    page, token = page_of(
        "ListSnapshotsInRecycleBin", params, page_size, found, lambda item: item.snapshot.id
    )
    return {
        "Snapshots": [
            {
                "SnapshotId": item.snapshot.id,
                "RecycleBinEnterTime": item.enter_time,
                "RecycleBinExitTime": item.exit_time,
                "Description": item.snapshot.description,
                "VolumeId": item.snapshot.volume_id,
            }
            for item in page
        ],
        "NextToken": token,
    }


@action
def restore_snapshot_from_recycle_bin(ebs: Ebs, params: Params) -> Result:
    snapshot = recycle_bin.restore_snapshot_from_recycle_bin(
        ebs, params["SnapshotId"], dry_run=dry_run_of(params)
    )
    return {
        "SnapshotId": snapshot.id,
        "Description": snapshot.description,
        "Encrypted": snapshot.encrypted,
        "OwnerId": snapshot.owner_id,
        "Progress": f"{snapshot.progress}%",
        "StartTime": snapshot.start_time,
        "State": snapshot.state,
        "VolumeId": snapshot.volume_id,
        "VolumeSize": snapshot.volume_size,
    }
