"""Fast snapshot restore per (snapshot, zone): Enable-, Disable- and
DescribeFastSnapshotRestores, and the task that moves each through its states.

enabling -> optimizing -> enabled, and disabling -> disabled, each step lasting EC2's time
divided by the time scale; the step's end is recorded as `due`, so a restart resumes it.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fakestor import errors
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.lifecycle_clock import due_after, seconds_until
from fakestor.control.loaders import load_snapshots
from fakestor.control.resources import from_text, to_text, utcnow
from fakestor.control.states import FastRestoreState, SnapshotState

ENABLING_TIME = timedelta(minutes=1)
OPTIMIZING_TIME_PER_TIB = timedelta(minutes=60)  # EC2: "60 minutes per TiB"
DISABLING_TIME = timedelta(minutes=1)
MAX_SNAPSHOTS = 5  # EC2's default quota of snapshots with fast snapshot restore per region
FAST_RESTORE_FILTERS = ("snapshot-id", "availability-zone", "owner-id", "state")
USER_INITIATED = "Client.UserInitiated - Lifecycle state transition"
_ACTIVE = (FastRestoreState.ENABLING, FastRestoreState.OPTIMIZING, FastRestoreState.ENABLED)
_TIME_COLUMNS = {
    FastRestoreState.ENABLING: "enabling_time",
    FastRestoreState.OPTIMIZING: "optimizing_time",
    FastRestoreState.ENABLED: "enabled_time",
    FastRestoreState.DISABLING: "disabling_time",
    FastRestoreState.DISABLED: "disabled_time",
}


@dataclass(frozen=True)
class FastRestore:
    snapshot_id: str
    zone: str
    state: FastRestoreState
    owner_id: str
    times: dict[str, datetime | None] = field(default_factory=dict)  # by state name


@dataclass(frozen=True)
class FastRestoreError:
    snapshot_id: str
    zone: str
    code: str
    message: str


def _of_row(row: sqlite3.Row, owner_id: str) -> FastRestore:
    return FastRestore(
        snapshot_id=row["snapshot_id"],
        zone=row["zone"],
        state=FastRestoreState(row["state"]),
        owner_id=owner_id,
        times={
            str(state): from_text(row[column]) if row[column] else None
            for state, column in _TIME_COLUMNS.items()
        },
    )


def _get(db: sqlite3.Connection, snapshot_id: str, zone: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT * FROM fast_snapshot_restores WHERE snapshot_id=? AND zone=?",
        (snapshot_id, zone),
    ).fetchone()
    return row


def _check_request(snapshot_ids: Sequence[str], zones: Sequence[str]) -> None:
    if not snapshot_ids:
        raise errors.MissingParameter("SourceSnapshotId")
    if not zones:
        raise errors.MissingParameter("AvailabilityZone")


def enable_fast_snapshot_restores(
    ebs: Ebs, snapshot_ids: Sequence[str], zones: Sequence[str], *, dry_run: bool = False
) -> tuple[list[FastRestore], list[FastRestoreError]]:
    """Start enabling each (snapshot, zone); refusals are listed, not raised, as EC2 does."""
    _check_request(snapshot_ids, zones)
    done: list[FastRestore] = []
    refused: list[FastRestoreError] = []
    started: list[tuple[str, str]] = []
    with ebs.store.transaction() as db:
        check_dry_run(dry_run)
        known = {s.id: s for s in load_snapshots(db, ebs.account_id)}
        for snapshot_id in snapshot_ids:
            snapshot = known.get(snapshot_id)
            for zone in zones:

                def refuse(
                    code: str, message: str, snapshot_id: str = snapshot_id, zone: str = zone
                ) -> None:
                    refused.append(FastRestoreError(snapshot_id, zone, code, message))

                if snapshot is None:
                    refuse(
                        errors.InvalidSnapshotNotFound.code,
                        f"The snapshot '{snapshot_id}' does not exist.",
                    )
                    continue
                if zone not in ebs.region.zones:
                    refuse(
                        errors.InvalidParameterValue.code,
                        f"Invalid availability zone: [{zone}].",
                    )
                    continue
                if snapshot.state != SnapshotState.COMPLETED:
                    refuse(
                        errors.IncorrectState.code,
                        f"Snapshot '{snapshot_id}' is in invalid state - {snapshot.state}",
                    )
                    continue
                if snapshot.storage_tier != "standard":
                    refuse(
                        errors.IncorrectState.code,
                        f"Snapshot '{snapshot_id}' is in the archive tier.",
                    )
                    continue
                row = _get(db, snapshot_id, zone)
                if row is not None and row["state"] in _ACTIVE:
                    done.append(_of_row(row, ebs.account_id))
                    continue
                enabled = {
                    r["snapshot_id"]
                    for r in db.execute("SELECT snapshot_id, state FROM fast_snapshot_restores")
                    if r["state"] in _ACTIVE
                }
                if snapshot_id not in enabled and len(enabled) >= MAX_SNAPSHOTS:
                    refuse(
                        "ConcurrentSnapshotLimitExceeded",
                        f"You can enable fast snapshot restore for at most {MAX_SNAPSHOTS} "
                        f"snapshots in {ebs.region.name}.",
                    )
                    continue
                now = utcnow()
                db.execute(
                    "INSERT OR REPLACE INTO fast_snapshot_restores(snapshot_id, zone, state, "
                    "due, enabling_time) VALUES (?, ?, ?, ?, ?)",
                    (
                        snapshot_id,
                        zone,
                        FastRestoreState.ENABLING,
                        to_text(due_after(ENABLING_TIME, ebs.time_scale)),
                        to_text(now),
                    ),
                )
                fresh = _get(db, snapshot_id, zone)
                assert fresh is not None
                done.append(_of_row(fresh, ebs.account_id))
                started.append((snapshot_id, zone))
    for snapshot_id, zone in started:
        submit_fast_restore(ebs, snapshot_id, zone)
    return done, refused


def disable_fast_snapshot_restores(
    ebs: Ebs, snapshot_ids: Sequence[str], zones: Sequence[str], *, dry_run: bool = False
) -> tuple[list[FastRestore], list[FastRestoreError]]:
    _check_request(snapshot_ids, zones)
    done: list[FastRestore] = []
    refused: list[FastRestoreError] = []
    started: list[tuple[str, str]] = []
    with ebs.store.transaction() as db:
        check_dry_run(dry_run)
        for snapshot_id in snapshot_ids:
            for zone in zones:
                row = _get(db, snapshot_id, zone)
                if zone not in ebs.region.zones:
                    refused.append(
                        FastRestoreError(
                            snapshot_id,
                            zone,
                            errors.InvalidParameterValue.code,
                            f"Invalid availability zone: [{zone}].",
                        )
                    )
                    continue
                if row is None or row["state"] not in _ACTIVE:
                    refused.append(
                        FastRestoreError(
                            snapshot_id,
                            zone,
                            errors.IncorrectState.code,
                            f"Fast snapshot restore is not enabled for '{snapshot_id}' in {zone}.",
                        )
                    )
                    continue
                db.execute(
                    "UPDATE fast_snapshot_restores SET state=?, due=?, disabling_time=? "
                    "WHERE snapshot_id=? AND zone=?",
                    (
                        FastRestoreState.DISABLING,
                        to_text(due_after(DISABLING_TIME, ebs.time_scale)),
                        to_text(utcnow()),
                        snapshot_id,
                        zone,
                    ),
                )
                fresh = _get(db, snapshot_id, zone)
                assert fresh is not None
                done.append(_of_row(fresh, ebs.account_id))
                started.append((snapshot_id, zone))
    for snapshot_id, zone in started:
        submit_fast_restore(ebs, snapshot_id, zone)
    return done, refused


def disable_archived(ebs: Ebs, db: sqlite3.Connection, snapshot_id: str) -> None:
    """EC2: "fast snapshot restore and snapshot sharing are automatically disabled after
    the snapshot is archived". Every zone where it is on goes disabling -> disabled."""
    zones = [
        row["zone"]
        for row in db.execute(
            "SELECT zone, state FROM fast_snapshot_restores WHERE snapshot_id=?", (snapshot_id,)
        )
        if row["state"] in _ACTIVE
    ]
    for zone in zones:
        db.execute(
            "UPDATE fast_snapshot_restores SET state=?, due=?, disabling_time=? "
            "WHERE snapshot_id=? AND zone=?",
            (
                FastRestoreState.DISABLING,
                to_text(due_after(DISABLING_TIME, ebs.time_scale)),
                to_text(utcnow()),
                snapshot_id,
                zone,
            ),
        )
    for zone in zones:  # its first read waits for this transaction to commit
        submit_fast_restore(ebs, snapshot_id, zone)


def _next_step(ebs: Ebs, db: sqlite3.Connection, row: sqlite3.Row) -> None:
    """Move one (snapshot, zone) to its next state once its current step is due."""
    state = row["state"]
    key = (row["snapshot_id"], row["zone"])
    now = to_text(utcnow())
    if state == FastRestoreState.ENABLING:
        size = db.execute(
            "SELECT volume_size FROM snapshots WHERE id=?", (row["snapshot_id"],)
        ).fetchone()
        tib = math.ceil((size["volume_size"] if size else 1) / 1024)
        db.execute(
            "UPDATE fast_snapshot_restores SET state=?, due=?, optimizing_time=? "
            "WHERE snapshot_id=? AND zone=?",
            (
                FastRestoreState.OPTIMIZING,
                to_text(due_after(OPTIMIZING_TIME_PER_TIB * tib, ebs.time_scale)),
                now,
                *key,
            ),
        )
    elif state == FastRestoreState.OPTIMIZING:
        db.execute(
            "UPDATE fast_snapshot_restores SET state=?, due=NULL, enabled_time=? "
            "WHERE snapshot_id=? AND zone=?",
            (FastRestoreState.ENABLED, now, *key),
        )
    elif state == FastRestoreState.DISABLING:
        db.execute(
            "UPDATE fast_snapshot_restores SET state=?, due=NULL, disabled_time=? "
            "WHERE snapshot_id=? AND zone=?",
            (FastRestoreState.DISABLED, now, *key),
        )


def submit_fast_restore(ebs: Ebs, snapshot_id: str, zone: str) -> None:
    """Advance (snapshot, zone) step by step until it is enabled or disabled."""

    def work() -> None:
        while True:
            with ebs.store.transaction() as db:
                row = _get(db, snapshot_id, zone)
            if row is None or row["due"] is None:
                return
            if not ebs.tasks.sleep(seconds_until(row["due"])):
                return
            with ebs.store.transaction() as db:
                current = _get(db, snapshot_id, zone)
                if current is None or current["due"] != row["due"]:
                    continue  # disabled (or deleted) meanwhile: follow the new step
                _next_step(ebs, db, current)

    ebs.tasks.submit([f"{snapshot_id}@{zone}"], work, f"fast snapshot restore {snapshot_id} {zone}")


def describe_fast_snapshot_restores(
    ebs: Ebs, *, filters: Sequence[Filter] = (), dry_run: bool = False
) -> list[FastRestore]:
    check_filters(filters, FAST_RESTORE_FILTERS)
    with ebs.store.transaction() as db:
        rows = db.execute(
            "SELECT * FROM fast_snapshot_restores ORDER BY snapshot_id, zone"
        ).fetchall()
    check_dry_run(dry_run)
    found = [_of_row(row, ebs.account_id) for row in rows]
    return [
        item
        for item in found
        if matches(
            {
                "snapshot-id": [item.snapshot_id],
                "availability-zone": [item.zone],
                "owner-id": [item.owner_id],
                "state": [str(item.state)],
            },
            filters,
        )
    ]
