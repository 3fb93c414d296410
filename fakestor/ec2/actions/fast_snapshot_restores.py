"""EC2 actions on fast snapshot restore: Enable-, Disable- and DescribeFastSnapshotRestores."""

from __future__ import annotations

from fakestor import errors
from fakestor.control import fast_snapshot_restores
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


def _zones(ebs: Ebs, params: Params) -> list[str]:
    zones = list(params.get("AvailabilityZones", []))
    for zone_id in params.get("AvailabilityZoneIds", []):
        named = [zone for zone in ebs.region.zones if ebs.region.zone_id(zone) == zone_id]
        if not named:
            raise errors.InvalidParameterValue(f"Invalid availability zone id: [{zone_id}].")
        zones.extend(named)
    return zones


def _doc(ebs: Ebs, item: fast_snapshot_restores.FastRestore) -> Result:
    return {**views.fast_restore(item), "AvailabilityZoneId": ebs.region.zone_id(item.zone)}


def _result(
    ebs: Ebs,
    outcome: tuple[
        list[fast_snapshot_restores.FastRestore], list[fast_snapshot_restores.FastRestoreError]
    ],
) -> Result:
    done, refused = outcome
    return {
        "Successful": [_doc(ebs, item) for item in done],
        "Unsuccessful": views.fast_restore_errors(refused),
    }


@action
def enable_fast_snapshot_restores(ebs: Ebs, params: Params) -> Result:
    return _result(
        ebs,
        fast_snapshot_restores.enable_fast_snapshot_restores(
            ebs,
            params.get("SourceSnapshotIds", []),
            _zones(ebs, params),
            dry_run=dry_run_of(params),
        ),
    )


@action
def disable_fast_snapshot_restores(ebs: Ebs, params: Params) -> Result:
    return _result(
        ebs,
        fast_snapshot_restores.disable_fast_snapshot_restores(
            ebs,
            params.get("SourceSnapshotIds", []),
            _zones(ebs, params),
            dry_run=dry_run_of(params),
        ),
    )


@action
def describe_fast_snapshot_restores(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeFastSnapshotRestores", params, 0, 200)
    found = fast_snapshot_restores.describe_fast_snapshot_restores(
        ebs, filters=filters_of(params), dry_run=dry_run_of(params)
    )
    page, token = page_of(
        "DescribeFastSnapshotRestores",
        params,
        page_size,
        found,
        lambda item: f"{item.snapshot_id}@{item.zone}",
    )
    return {"FastSnapshotRestores": [_doc(ebs, item) for item in page], "NextToken": token}
