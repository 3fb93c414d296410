"""Snapshot locks: LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots, and the check that
keeps a locked snapshot from being deleted or re-tiered.

A lock's state follows from its recorded times (cool-off end, expiry), so no task moves it
and a restart finds it where the clock says. Durations are EC2's divided by the time scale.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fakestor import errors, ids
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.lifecycle_clock import scaled
from fakestor.control.loaders import get_snapshot, load_snapshots
from fakestor.control.resources import from_text, to_text, utcnow
from fakestor.control.states import LockState, SnapshotState

LOCK_MODES = ("governance", "compliance")
COOL_OFF_HOURS = (1, 72)
LOCK_DAYS = (1, 36500)
LOCKED_SNAPSHOT_FILTERS = ("lock-state",)


@dataclass(frozen=True)
class SnapshotLock:
    snapshot_id: str
    owner_id: str
    mode: str
    created_on: datetime
    duration_start: datetime
    expires_on: datetime
    duration_days: int | None
    cool_off_hours: int | None
    cool_off_expires: datetime | None

    def state(self, now: datetime | None = None) -> LockState:
        now = now or utcnow()
        if now >= self.expires_on:
            return LockState.EXPIRED
        if self.mode == "governance":
            return LockState.GOVERNANCE
        if self.cool_off_expires is not None and now < self.cool_off_expires:
            return LockState.COMPLIANCE_COOLOFF
        return LockState.COMPLIANCE

    @property
    def holds(self) -> bool:
        """Whether the snapshot may not be deleted or re-tiered now."""
        return self.state() != LockState.EXPIRED


def _of_row(row: sqlite3.Row, owner_id: str) -> SnapshotLock:
    def when(column: str) -> datetime | None:
        return from_text(row[column]) if row[column] else None

    return SnapshotLock(
        snapshot_id=row["snapshot_id"],
        owner_id=owner_id,
        mode=row["mode"],
        created_on=from_text(row["created_on"]),
        duration_start=from_text(row["duration_start"]),
        expires_on=from_text(row["expires_on"]),
        duration_days=row["duration_days"],
        cool_off_hours=row["cool_off_hours"],
        cool_off_expires=when("cool_off_expires"),
    )


def find_lock(db: sqlite3.Connection, owner_id: str, snapshot_id: str) -> SnapshotLock | None:
    row = db.execute("SELECT * FROM snapshot_locks WHERE snapshot_id=?", (snapshot_id,)).fetchone()
    return None if row is None else _of_row(row, owner_id)


def check_unlocked(db: sqlite3.Connection, owner_id: str, snapshot_id: str, doing: str) -> None:
    """Refuse `doing` (e.g. "deleted") to a snapshot whose lock holds."""
    lock = find_lock(db, owner_id, snapshot_id)
    if lock is not None and lock.holds:
        raise errors.SnapshotLocked(
            f"The snapshot {snapshot_id} is locked in {lock.mode} mode "
            f"(lock state {lock.state()}) and can't be {doing}."
        )


def _in_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise errors.InvalidParameterValue(
            f"Value ({value}) for parameter {name} is invalid. It must be between {low} and {high}."
        )


def lock_snapshot(
    ebs: Ebs,
    snapshot_id: str,
    mode: str,
    *,
    cool_off_period: int | None = None,
    lock_duration: int | None = None,
    expiration_date: datetime | None = None,
    dry_run: bool = False,
) -> SnapshotLock:
    """Lock a snapshot, or change the lock it has within what its mode allows."""
    if mode not in LOCK_MODES:
        raise errors.InvalidParameterValue(
            f"Value ({mode}) for parameter LockMode is invalid. Use governance or compliance."
        )
    if (lock_duration is None) == (expiration_date is None):
        raise errors.InvalidParameterCombination(
            "Specify either LockDuration or ExpirationDate, but not both."
        )
    if cool_off_period is not None:
        if mode == "governance":
            raise errors.InvalidParameterCombination(
                "CoolOffPeriod applies to compliance mode only; omit it for governance mode."
            )
        _in_range("CoolOffPeriod", cool_off_period, COOL_OFF_HOURS)
    now = utcnow()
    if lock_duration is not None:
        _in_range("LockDuration", lock_duration, LOCK_DAYS)
        expires_on = now + scaled(timedelta(days=lock_duration), ebs.time_scale)
    else:
        assert expiration_date is not None
        if expiration_date <= now:
            raise errors.InvalidParameterValue(
                f"Value ({to_text(expiration_date)}) for parameter ExpirationDate is invalid. "
                "It must be in the future."
            )
        expires_on = now + scaled(expiration_date - now, ebs.time_scale)
    with ebs.store.transaction() as db:
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
        if snapshot.state == SnapshotState.ERROR:
            raise errors.IncorrectState(
                f"Snapshot '{snapshot_id}' is in invalid state - {snapshot.state}"
            )
        earlier = find_lock(db, ebs.account_id, snapshot_id)
        if earlier is not None and earlier.state(now) == LockState.COMPLIANCE:
            _check_compliance_change(earlier, mode, cool_off_period, expires_on)
        check_dry_run(dry_run)
        created_on = now if earlier is None or not earlier.holds else earlier.created_on
        cool_off_expires = (
            now + scaled(timedelta(hours=cool_off_period), ebs.time_scale)
            if cool_off_period is not None
            else None
        )
        db.execute(
            "INSERT OR REPLACE INTO snapshot_locks(snapshot_id, mode, created_on, "
            "duration_start, expires_on, duration_days, cool_off_hours, cool_off_expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                snapshot_id,
                mode,
                to_text(created_on),
                to_text(now),
                to_text(expires_on),
                lock_duration,
                cool_off_period,
                None if cool_off_expires is None else to_text(cool_off_expires),
            ),
        )
        lock = find_lock(db, ebs.account_id, snapshot_id)
    assert lock is not None
    return lock


def _check_compliance_change(
    earlier: SnapshotLock, mode: str, cool_off_period: int | None, expires_on: datetime
) -> None:
    """After its cool-off, a compliance lock can only be extended."""
    where = f"The snapshot {earlier.snapshot_id} is locked in compliance mode"
    if mode != "compliance":
        raise errors.SnapshotLocked(f"{where}; its lock mode can't be changed.")
    if cool_off_period is not None:
        raise errors.SnapshotLocked(
            f"{where} and its cooling-off period has expired; omit CoolOffPeriod."
        )
    if expires_on < earlier.expires_on:
        raise errors.SnapshotLocked(f"{where}; its lock duration can only be increased.")


def unlock_snapshot(ebs: Ebs, snapshot_id: str, *, dry_run: bool = False) -> None:
    with ebs.store.transaction() as db:
        get_snapshot(db, ebs.account_id, snapshot_id)
        lock = find_lock(db, ebs.account_id, snapshot_id)
        if lock is None or not lock.holds:
            raise errors.IncorrectState(f"The snapshot {snapshot_id} is not locked.")
        if lock.state() == LockState.COMPLIANCE:
            raise errors.SnapshotLocked(
                f"The snapshot {snapshot_id} is locked in compliance mode and its cooling-off "
                "period has expired; it can't be unlocked."
            )
        check_dry_run(dry_run)
        db.execute("DELETE FROM snapshot_locks WHERE snapshot_id=?", (snapshot_id,))


def describe_locked_snapshots(
    ebs: Ebs,
    *,
    snapshot_ids: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[SnapshotLock]:
    check_filters(filters, LOCKED_SNAPSHOT_FILTERS)
    for snapshot_id in snapshot_ids:
        ids.check(ids.SNAPSHOT, snapshot_id)
    with ebs.store.transaction() as db:
        if snapshot_ids:
            found = {s.id for s in load_snapshots(db, ebs.account_id, snapshot_ids)}
            missing = [s for s in snapshot_ids if s not in found]
            if missing:
                raise errors.InvalidSnapshotNotFound(", ".join(missing))
        rows = db.execute("SELECT * FROM snapshot_locks ORDER BY snapshot_id").fetchall()
    check_dry_run(dry_run)
    locks = [_of_row(row, ebs.account_id) for row in rows]
    if snapshot_ids:
        locks = [lock for lock in locks if lock.snapshot_id in snapshot_ids]
    now = utcnow()
    return [lock for lock in locks if matches({"lock-state": [lock.state(now)]}, filters)]
