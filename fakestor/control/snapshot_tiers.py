"""The archive tier: ModifySnapshotTier, RestoreSnapshotTier, DescribeSnapshotTierStatus, and
the tasks that finish an archival or a restore and archive a temporary restore at expiry.

Each step lasts EC2's time divided by the time scale; its end is recorded as `due`, so a
restarted server finishes it on time. Archiving moves the data out of the shared store into
a full copy of the snapshot's own (the backends' archive_snapshot), and a restore brings it
back before the snapshot can be used again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fakestor import errors
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.fast_snapshot_restores import disable_archived
from fakestor.control.filters import Filter, check_filters, matches, tag_values
from fakestor.control.lifecycle_clock import due_after, scaled, seconds_until
from fakestor.control.loaders import get_snapshot, load_snapshots
from fakestor.control.resources import Snapshot, from_text, to_text, utcnow
from fakestor.control.snapshot_locks import check_unlocked
from fakestor.control.states import SnapshotState, TieringState

ARCHIVAL_TIME = timedelta(hours=24)  # EC2 gives none; archiving is a matter of hours
RESTORE_TIME = timedelta(hours=24)  # EC2: "can take up to 72 hours"
RESTORE_DAYS = (1, 180)
TIER_STATUS_FILTERS = ("snapshot-id", "volume-id", "last-tiering-operation")

ARCHIVE = "archive"
STANDARD = "standard"
_IN_PROGRESS = (
    TieringState.ARCHIVAL_IN_PROGRESS,
    TieringState.TEMPORARY_RESTORE_IN_PROGRESS,
    TieringState.PERMANENT_RESTORE_IN_PROGRESS,
)


@dataclass(frozen=True)
class TierStatus:
    snapshot: Snapshot
    storage_tier: str
    state: TieringState | None
    started: datetime | None
    progress: int | None
    archival_complete_time: datetime | None
    restore_expiry: datetime | None


def _row(db: sqlite3.Connection, snapshot_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM snapshot_tiers WHERE snapshot_id=?", (snapshot_id,)
    ).fetchone()
    return row


def storage_tier(db: sqlite3.Connection, snapshot_id: str) -> tuple[str, datetime | None]:
    """The snapshot's StorageTier and RestoreExpiryTime, as DescribeSnapshots reports them."""
    row = _row(db, snapshot_id)
    if row is None:
        return STANDARD, None
    expiry = from_text(row["restore_expiry"]) if row["restore_expiry"] else None
    return row["storage_tier"], expiry


def check_in_standard_tier(db: sqlite3.Connection, snapshot_id: str) -> None:
    """Refuse to read an archived snapshot's data (restore it first)."""
    if storage_tier(db, snapshot_id)[0] == ARCHIVE:
        raise errors.IncorrectState(
            f"Snapshot '{snapshot_id}' is in the archive tier; restore it with "
            "RestoreSnapshotTier before using it."
        )


def modify_snapshot_tier(
    ebs: Ebs, snapshot_id: str, storage_tier_name: str, *, dry_run: bool = False
) -> datetime:
    """Start archiving a snapshot; returns TieringStartTime."""
    if storage_tier_name != ARCHIVE:
        raise errors.InvalidParameterValue(
            f"Value ({storage_tier_name}) for parameter StorageTier is invalid. "
            "Only 'archive' is valid."
        )
    with ebs.store.transaction() as db:
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
        if snapshot.state != SnapshotState.COMPLETED:
            raise errors.IncorrectState(
                f"Snapshot '{snapshot_id}' is in invalid state - {snapshot.state}; only "
                f"'{SnapshotState.COMPLETED}' snapshots can be archived."
            )
        check_unlocked(db, ebs.account_id, snapshot_id, "archived")
        row = _row(db, snapshot_id)
        if row is not None and (row["storage_tier"] == ARCHIVE or row["state"] in _IN_PROGRESS):
            raise errors.IncorrectState(
                f"Snapshot '{snapshot_id}' is already archived or being tiered ({row['state']})."
            )
        check_dry_run(dry_run)
        started = utcnow()
        db.execute(
            "INSERT OR REPLACE INTO snapshot_tiers(snapshot_id, storage_tier, state, started, "
            "due, progress) VALUES (?, ?, ?, ?, ?, 0)",
            (
                snapshot_id,
                STANDARD,
                TieringState.ARCHIVAL_IN_PROGRESS,
                to_text(started),
                to_text(due_after(ARCHIVAL_TIME, ebs.time_scale)),
            ),
        )
    submit_tiering(ebs, snapshot_id)
    return started


@dataclass(frozen=True)
class RestoreStarted:
    start_time: datetime
    days: int | None
    permanent: bool


def restore_snapshot_tier(
    ebs: Ebs,
    snapshot_id: str,
    *,
    temporary_restore_days: int | None = None,
    permanent_restore: bool = False,
    dry_run: bool = False,
) -> RestoreStarted:
    """Restore an archived snapshot, or change a temporary restore's period or type."""
    if permanent_restore and temporary_restore_days is not None:
        raise errors.InvalidParameterCombination(
            "Specify either TemporaryRestoreDays or PermanentRestore, but not both."
        )
    if not permanent_restore and temporary_restore_days is None:
        raise errors.MissingParameter("TemporaryRestoreDays or PermanentRestore")
    if temporary_restore_days is not None and not (
        RESTORE_DAYS[0] <= temporary_restore_days <= RESTORE_DAYS[1]
    ):
        raise errors.InvalidParameterValue(
            f"Value ({temporary_restore_days}) for parameter TemporaryRestoreDays is invalid. "
            f"It must be between {RESTORE_DAYS[0]} and {RESTORE_DAYS[1]}."
        )
    with ebs.store.transaction() as db:
        get_snapshot(db, ebs.account_id, snapshot_id)
        row = _row(db, snapshot_id)
        state = None if row is None else row["state"]
        now = utcnow()
        if state == TieringState.TEMPORARY_RESTORE_COMPLETED:
            check_dry_run(dry_run)
            # Already restored: a new period, or made permanent, from now on.
            if permanent_restore:
                db.execute(
                    "UPDATE snapshot_tiers SET state=?, restore_expiry=NULL, restore_days=NULL, "
                    "due=NULL WHERE snapshot_id=?",
                    (TieringState.PERMANENT_RESTORE_COMPLETED, snapshot_id),
                )
            else:
                assert temporary_restore_days is not None
                expiry = now + scaled(timedelta(days=temporary_restore_days), ebs.time_scale)
                db.execute(
                    "UPDATE snapshot_tiers SET restore_days=?, restore_expiry=?, due=? "
                    "WHERE snapshot_id=?",
                    (temporary_restore_days, to_text(expiry), to_text(expiry), snapshot_id),
                )
    if state == TieringState.TEMPORARY_RESTORE_COMPLETED:
        if not permanent_restore:
            submit_tiering(ebs, snapshot_id)  # archives again at the new expiry
        return RestoreStarted(now, temporary_restore_days, permanent_restore)
    with ebs.store.transaction() as db:
        row = _row(db, snapshot_id)
        state = None if row is None else row["state"]
        if row is None or row["storage_tier"] != ARCHIVE or state in _IN_PROGRESS:
            raise errors.IncorrectState(
                f"Snapshot '{snapshot_id}' is not in the archive tier"
                + (f" ({state})." if state else ".")
            )
        check_dry_run(dry_run)
        db.execute(
            "UPDATE snapshot_tiers SET state=?, started=?, due=?, progress=0, restore_days=? "
            "WHERE snapshot_id=?",
            (
                TieringState.PERMANENT_RESTORE_IN_PROGRESS
                if permanent_restore
                else TieringState.TEMPORARY_RESTORE_IN_PROGRESS,
                to_text(now),
                to_text(due_after(RESTORE_TIME, ebs.time_scale)),
                temporary_restore_days,
                snapshot_id,
            ),
        )
    submit_tiering(ebs, snapshot_id)
    return RestoreStarted(now, temporary_restore_days, permanent_restore)


def submit_tiering(ebs: Ebs, snapshot_id: str) -> None:
    """Finish the snapshot's tiering step when it is due (or re-archive at restore expiry)."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = _row(db, snapshot_id)
        if row is None or row["due"] is None:
            return  # deleted meanwhile, or nothing left to do
        if not ebs.tasks.sleep(seconds_until(row["due"])):
            return
        # The data moves before the step is recorded as done: archived out of the shared
        # store, or back from the archive (backends' archive_snapshot / restore_...).
        if row["state"] in (
            TieringState.ARCHIVAL_IN_PROGRESS,
            TieringState.TEMPORARY_RESTORE_COMPLETED,
        ):
            ebs.backend.archive_snapshot(snapshot_id)
        elif row["state"] in (
            TieringState.TEMPORARY_RESTORE_IN_PROGRESS,
            TieringState.PERMANENT_RESTORE_IN_PROGRESS,
        ):
            ebs.backend.restore_archived_snapshot(snapshot_id)
        with ebs.store.transaction() as db:
            current = _row(db, snapshot_id)
            if current is None or current["due"] != row["due"]:
                return  # deleted, or the restore period changed: its own task follows
            _finish_step(ebs, db, current)
        with ebs.store.transaction() as db:
            following = _row(db, snapshot_id)
        if following is not None and following["due"] is not None:
            submit_tiering(ebs, snapshot_id)

    def failed(failure: Exception) -> None:
        failures = {
            TieringState.ARCHIVAL_IN_PROGRESS: TieringState.ARCHIVAL_FAILED,
            TieringState.TEMPORARY_RESTORE_IN_PROGRESS: TieringState.TEMPORARY_RESTORE_FAILED,
            TieringState.PERMANENT_RESTORE_IN_PROGRESS: TieringState.PERMANENT_RESTORE_FAILED,
        }
        with ebs.store.transaction() as db:
            row = _row(db, snapshot_id)
            if row is not None and row["state"] in failures:
                db.execute(
                    "UPDATE snapshot_tiers SET state=?, due=NULL WHERE snapshot_id=?",
                    (failures[row["state"]], snapshot_id),
                )

    ebs.tasks.submit([snapshot_id], work, f"tiering {snapshot_id}", on_failure=failed)


def _finish_step(ebs: Ebs, db: sqlite3.Connection, row: sqlite3.Row) -> None:
    snapshot_id = row["snapshot_id"]
    now = utcnow()
    state = row["state"]
    if state in (TieringState.ARCHIVAL_IN_PROGRESS, TieringState.TEMPORARY_RESTORE_COMPLETED):
        # Archived, or a temporary restore expired: back to the archive tier.
        archived_at = (
            to_text(now)
            if state == TieringState.ARCHIVAL_IN_PROGRESS
            else row["archival_complete_time"]
        )
        db.execute(
            "UPDATE snapshot_tiers SET storage_tier=?, state=?, due=NULL, progress=100, "
            "archival_complete_time=?, restore_expiry=NULL WHERE snapshot_id=?",
            (ARCHIVE, TieringState.ARCHIVAL_COMPLETED, archived_at, snapshot_id),
        )
        disable_archived(ebs, db, snapshot_id)
    elif state == TieringState.PERMANENT_RESTORE_IN_PROGRESS:
        db.execute(
            "UPDATE snapshot_tiers SET storage_tier=?, state=?, due=NULL, progress=100 "
            "WHERE snapshot_id=?",
            (STANDARD, TieringState.PERMANENT_RESTORE_COMPLETED, snapshot_id),
        )
    elif state == TieringState.TEMPORARY_RESTORE_IN_PROGRESS:
        expiry = now + scaled(timedelta(days=row["restore_days"]), ebs.time_scale)
        db.execute(
            "UPDATE snapshot_tiers SET storage_tier=?, state=?, due=?, progress=100, "
            "restore_expiry=? WHERE snapshot_id=?",
            (
                STANDARD,
                TieringState.TEMPORARY_RESTORE_COMPLETED,
                to_text(expiry),
                to_text(expiry),
                snapshot_id,
            ),
        )


def describe_snapshot_tier_status(
    ebs: Ebs, *, filters: Sequence[Filter] = (), dry_run: bool = False
) -> list[TierStatus]:
    check_filters(filters, TIER_STATUS_FILTERS)
    with ebs.store.transaction() as db:
        snapshots = load_snapshots(db, ebs.account_id)
        rows = {row["snapshot_id"]: row for row in db.execute("SELECT * FROM snapshot_tiers")}
    check_dry_run(dry_run)
    found = []
    for snapshot in snapshots:
        row = rows.get(snapshot.id)

        def when(column: str, row: sqlite3.Row | None = row) -> datetime | None:
            return from_text(row[column]) if row is not None and row[column] else None

        status = TierStatus(
            snapshot=snapshot,
            storage_tier=STANDARD if row is None else row["storage_tier"],
            state=None if row is None else TieringState(row["state"]),
            started=when("started"),
            progress=None if row is None else row["progress"],
            archival_complete_time=when("archival_complete_time"),
            restore_expiry=when("restore_expiry"),
        )
        values: dict[str, list[str]] = {
            **tag_values(snapshot.tags),
            "snapshot-id": [snapshot.id],
            "volume-id": [snapshot.volume_id],
            "last-tiering-operation": [str(status.state)] if status.state else [],
        }
        if matches(values, filters):
            found.append(status)
    return found
