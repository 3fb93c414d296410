"""The EC2 side of the Recycle Bin: ListSnapshotsInRecycleBin, RestoreSnapshotFromRecycleBin,
and the task that finishes a restore.

A snapshot enters the bin when DeleteSnapshot finds a rule retaining it (snapshots.py), with
its data, tags and lock kept; it is purged there when its retention ends. A restore shows
`recovering` for the shortest lifecycle step, then `completed`, as EC2 does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fakestor import errors, ids
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.lifecycle_clock import SHORTEST_STEP, seconds_until
from fakestor.control.loaders import get_snapshot, load_snapshots
from fakestor.control.resources import Snapshot, from_text, to_text, utcnow
from fakestor.control.snapshots import submit_purge
from fakestor.control.states import SnapshotState
from fakestor.control.tasks import RetryLater


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
