"""The EC2 side of the Recycle Bin: a deleted snapshot that a rule retains enters the bin,
ListSnapshotsInRecycleBin, RestoreSnapshotFromRecycleBin, and the tasks that purge a binned
snapshot when its retention ends and finish a restore.

In the bin a snapshot keeps its data, tags and lock, and is `recoverable` (to every other use
it does not exist). A restore shows `recovering` for the shortest lifecycle step, then
`completed`, as EC2 does. Times are EC2's divided by the time scale.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fakestor import errors, ids
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.lifecycle_clock import SHORTEST_STEP, due_after, seconds_until
from fakestor.control.loaders import get_snapshot, load_snapshots
from fakestor.control.recycle_bin_rules import retaining_rule
from fakestor.control.resources import Snapshot, from_text, to_text, utcnow
from fakestor.control.snapshot_locks import find_lock
from fakestor.control.snapshot_trash import remove_snapshot, submit_empty_trash
from fakestor.control.states import SnapshotState
from fakestor.control.tasks import RetryLater


def retain_or_remove(ebs: Ebs, db: sqlite3.Connection, snapshot_id: str) -> bool:
    """Send a deleted snapshot to the Recycle Bin if a rule retains it (True), else remove
    its record. Its data stays until it leaves the bin; fast snapshot restore ends at once."""
    snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
    rule = None
    if snapshot.state in (SnapshotState.COMPLETED, SnapshotState.RECOVERING):
        rule = retaining_rule(ebs, db, "EBS_SNAPSHOT", snapshot.tags)
    if rule is None:
        db.execute("DELETE FROM recycle_bin WHERE snapshot_id=?", (snapshot_id,))
        remove_snapshot(db, snapshot_id)
        return False
    now = utcnow()
    exit_time = due_after(timedelta(days=rule.retention_days), ebs.time_scale)
    db.execute(
        "UPDATE snapshots SET state=?, delete_requested=0 WHERE id=?",
        (SnapshotState.RECOVERABLE, snapshot_id),
    )
    db.execute("DELETE FROM fast_snapshot_restores WHERE snapshot_id=?", (snapshot_id,))
    db.execute(
        "INSERT OR REPLACE INTO recycle_bin(snapshot_id, rule_id, enter_time, exit_time) "
        "VALUES (?, ?, ?, ?)",
        (snapshot_id, rule.identifier, to_text(now), to_text(exit_time)),
    )
    return True


def submit_disposal(ebs: Ebs, snapshot_id: str, retained: bool) -> None:
    if retained:
        submit_purge(ebs, snapshot_id)
    else:
        submit_empty_trash(ebs, snapshot_id)


def submit_purge(ebs: Ebs, snapshot_id: str) -> None:
    """Delete a snapshot in the Recycle Bin for good when its retention ends, or later if a
    lock still holds it then; restored meanwhile, it stays."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT exit_time, recover_due FROM recycle_bin WHERE snapshot_id=?",
                (snapshot_id,),
            ).fetchone()
            if row is None or row["recover_due"] is not None:
                return
            wait = seconds_until(row["exit_time"])
            lock = find_lock(db, ebs.account_id, snapshot_id)
            if wait <= 0 and lock is not None and lock.holds:
                wait = max(0.1, (lock.expires_on - utcnow()).total_seconds())
            if wait <= 0:
                db.execute("DELETE FROM recycle_bin WHERE snapshot_id=?", (snapshot_id,))
                remove_snapshot(db, snapshot_id)
        if wait > 0:
            raise RetryLater(wait)  # waits on a timer, not in a worker
        submit_empty_trash(ebs, snapshot_id)

    ebs.tasks.submit([snapshot_id], work, f"recycle bin retention of {snapshot_id}")


@dataclass(frozen=True)
class BinnedSnapshot:
    snapshot: Snapshot
    enter_time: datetime
    exit_time: datetime
    rule_id: str


def list_snapshots_in_recycle_bin(
    ebs: Ebs, *, snapshot_ids: Sequence[str] = (), dry_run: bool = False
) -> list[BinnedSnapshot]:
    """The snapshots in the bin, or those of `snapshot_ids` that are (an id that is not in
    the bin is left out: AWS documents no error for it)."""
    for snapshot_id in snapshot_ids:
        ids.check(ids.SNAPSHOT, snapshot_id)
    with ebs.store.transaction() as db:
        rows = {
            row["snapshot_id"]: row
            for row in db.execute("SELECT * FROM recycle_bin WHERE recover_due IS NULL")
        }
        wanted = [s for s in snapshot_ids if s in rows] if snapshot_ids else list(rows)
        snapshots = load_snapshots(db, ebs.account_id, wanted, in_recycle_bin=True)
    check_dry_run(dry_run)
    return [
        BinnedSnapshot(
            snapshot,
            from_text(rows[snapshot.id]["enter_time"]),
            from_text(rows[snapshot.id]["exit_time"]),
            rows[snapshot.id]["rule_id"],
        )
        for snapshot in snapshots
        if snapshot.state == SnapshotState.RECOVERABLE
    ]


def restore_snapshot_from_recycle_bin(
    ebs: Ebs, snapshot_id: str, *, dry_run: bool = False
) -> Snapshot:
    """Take a snapshot out of the bin: `recovering`, then `completed` with its data, tags and
    lock as they were."""
    ids.check(ids.SNAPSHOT, snapshot_id)
    with ebs.store.transaction() as db:
        row = db.execute(
            "SELECT recover_due FROM recycle_bin WHERE snapshot_id=?", (snapshot_id,)
        ).fetchone()
        if row is None or row["recover_due"] is not None:
            raise errors.InvalidSnapshotNotFound(snapshot_id)
        check_dry_run(dry_run)
        db.execute(
            "UPDATE recycle_bin SET recover_due=? WHERE snapshot_id=?",
            (to_text(utcnow() + SHORTEST_STEP), snapshot_id),
        )
        db.execute(
            "UPDATE snapshots SET state=? WHERE id=?", (SnapshotState.RECOVERING, snapshot_id)
        )
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
    submit_recover(ebs, snapshot_id)
    return snapshot


def submit_recover(ebs: Ebs, snapshot_id: str) -> None:
    """Finish a restore from the bin when its step ends."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT recover_due FROM recycle_bin WHERE snapshot_id=?", (snapshot_id,)
            ).fetchone()
            if row is None or row["recover_due"] is None:
                return
            wait = seconds_until(row["recover_due"])
            if wait <= 0:
                db.execute("DELETE FROM recycle_bin WHERE snapshot_id=?", (snapshot_id,))
                db.execute(
                    "UPDATE snapshots SET state=? WHERE id=? AND state=?",
                    (SnapshotState.COMPLETED, snapshot_id, SnapshotState.RECOVERING),
                )
        if wait > 0:
            raise RetryLater(wait)

    ebs.tasks.submit([snapshot_id], work, f"restore {snapshot_id} from the recycle bin")


def resume_binned(ebs: Ebs, snapshot_id: str, state: str) -> None:
    """After a restart: purge timers and restores of the bin's snapshots go on."""
    if state == SnapshotState.RECOVERING:
        submit_recover(ebs, snapshot_id)
    else:
        submit_purge(ebs, snapshot_id)
