"""Volume initialization: a volume restored from a snapshot or copied from a volume has its
data read (or copied) by the backend in the background, at the volume's initialization
rate, and DescribeVolumeStatus reports the progress.

A rate is EC2's MiB/s; here it moves `rate * time scale` MiB each second, as every other
EC2 duration is divided by the time scale (so `--time-scale 1` initializes at the rate
itself). The pass works in slices of SLICE seconds, records where it got to after each
(a restart resumes from there) and frees its worker between slices. It runs beside the
volume's other tasks: the backends read data that may be written, snapshotted or deleted
meanwhile.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time

from backends import BackendError
from fakestor import errors
from fakestor.control.context import Ebs
from fakestor.control.resources import to_text, utcnow
from fakestor.control.states import FastRestoreState, InitializationState, VolumeState
from fakestor.control.tasks import RetryLater

log = logging.getLogger(__name__)

DEFAULT = "default"
PROVISIONED_RATE = "provisioned-rate"
VOLUME_COPY = "volume-copy"

MIN_RATE, MAX_RATE = 100, 300  # VolumeInitializationRate, MiB/s
# EC2 documents no default rate ("the default volume initialization rate fluctuates");
# fakestor's choice is half the lowest rate one can provision.
DEFAULT_RATE = 50
# A volume copy initializes at "the rate for volume copies", undocumented; fakestor takes
# the baseline a copy delivers while it initializes (125 MiB/s).
VOLUME_COPY_RATE = 125
SLICE = 0.25  # seconds of background work between recorded progress
STEP = 64 * 1024**2  # bytes of data a backend visits per call
MIB = 1024**2
GIB = 1024**3


def check_rate(rate: int | None, snapshot_id: str | None) -> None:
    """VolumeInitializationRate: only for a volume restored from a snapshot, 100-300 MiB/s."""
    if rate is None:
        return
    if snapshot_id is None:
        # EC2's wording for this is not documented; fakestor's.
        raise errors.InvalidParameterCombination(
            "VolumeInitializationRate is supported only for volumes created from snapshots."
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise errors.InvalidParameterValue(
            f"Value ({rate}) for parameter VolumeInitializationRate is invalid. "
            f"Valid range: {MIN_RATE} - {MAX_RATE} MiB/s."
        )


def fast_restore_enabled(db: sqlite3.Connection, snapshot_id: str, zone: str) -> bool:
    row = db.execute(
        "SELECT state FROM fast_snapshot_restores WHERE snapshot_id=? AND zone=?",
        (snapshot_id, zone),
    ).fetchone()
    return row is not None and row["state"] == FastRestoreState.ENABLED


def begin_restore(
    db: sqlite3.Connection,
    volume_id: str,
    zone: str,
    snapshot_id: str,
    rate: int | None,
    time_scale: float = 1.0,
) -> bool:
    """Record the initialization of a volume being restored from `snapshot_id`; True if a
    pass must be submitted. From a snapshot with fast snapshot restore enabled in the
    zone it is complete at once, unless a rate was asked for (EC2 then uses the rate)."""
    fast = rate is None and fast_restore_enabled(db, snapshot_id, zone)
    db.execute(
        "UPDATE volumes SET initialization_rate=?, fast_restored=? WHERE id=?",
        (rate, int(fast), volume_id),
    )
    kind = DEFAULT if rate is None else PROVISIONED_RATE
    _insert(db, volume_id, kind, rate or DEFAULT_RATE, completed=fast)
    if rate is not None and not fast:
        # EC2 estimates a provisioned rate's time from the start: the whole size at the
        # rate, until the pass's first slice knows the data to read.
        size = db.execute("SELECT size FROM volumes WHERE id=?", (volume_id,)).fetchone()["size"]
        estimate = math.ceil(size * GIB / (rate * MIB * time_scale))
        db.execute(
            "UPDATE volume_initializations SET seconds_left=? WHERE volume_id=?",
            (estimate, volume_id),
        )
    return not fast


def begin_copy(db: sqlite3.Connection, volume_id: str) -> None:
    """Record the initialization of a volume copy; submit its pass."""
    _insert(db, volume_id, VOLUME_COPY, VOLUME_COPY_RATE, completed=False)


def _insert(db: sqlite3.Connection, volume_id: str, kind: str, rate: int, completed: bool) -> None:
    now = to_text(utcnow())
    state = InitializationState.COMPLETED if completed else InitializationState.INITIALIZING
    db.execute(
        "INSERT OR REPLACE INTO volume_initializations(volume_id, kind, rate, state, "
        "seconds_left, started, completed) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (volume_id, kind, rate, state, 0 if completed else None, now, now if completed else None),
    )


def submit_initialization(ebs: Ebs, volume_id: str) -> None:
    """Run the volume's initialization pass, one slice per task, to completion."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT * FROM volume_initializations WHERE volume_id=?", (volume_id,)
            ).fetchone()
            volume = db.execute(
                "SELECT size, state FROM volumes WHERE id=?", (volume_id,)
            ).fetchone()
            if row is not None and volume is None:  # deleted before its row was
                db.execute("DELETE FROM volume_initializations WHERE volume_id=?", (volume_id,))
        if row is None or volume is None or row["state"] != InitializationState.INITIALIZING:
            return
        if volume["state"] == VolumeState.CREATING:
            raise RetryLater(SLICE)  # its data is still being made
        if volume["state"] not in (VolumeState.AVAILABLE, VolumeState.IN_USE):
            return  # deleting, or no data to read; a restart tries again
        started = time.monotonic()
        pace = row["rate"] * MIB * ebs.time_scale  # bytes per second here
        end = volume["size"] * GIB
        position, done, budget = row["position"], row["done"], max(1, int(pace * SLICE))
        try:
            total = row["total"]
            if total is None:
                total = ebs.backend.initialization_bytes(volume_id, volume["size"])
            # In steps, so a slice holds its worker about SLICE seconds however fast the pace.
            while budget > 0 and position < end and time.monotonic() - started < SLICE:
                position, visited = ebs.backend.initialize_volume(
                    volume_id, volume["size"], position, min(budget, STEP)
                )
                done += visited
                budget -= visited
                if not visited:
                    break
        except BackendError as failure:
            log.warning("initialization of %s stopped: %s", volume_id, failure)
            return
        finished = position >= end
        seconds_left = 0 if finished else math.ceil(max(0, total - done) / pace)
        with ebs.store.transaction() as db:
            db.execute(
                "UPDATE volume_initializations SET position=?, done=?, total=?, seconds_left=?, "
                "state=?, completed=? WHERE volume_id=? AND state=?",
                (
                    position,
                    done,
                    total,
                    seconds_left,
                    InitializationState.COMPLETED if finished else InitializationState.INITIALIZING,
                    to_text(utcnow()) if finished else None,
                    volume_id,
                    InitializationState.INITIALIZING,
                ),
            )
        if not finished:
            raise RetryLater(max(0.0, SLICE - (time.monotonic() - started)))

    # A queue of its own: the volume's attach, snapshot or delete never waits for the pass.
    ebs.tasks.submit([f"{volume_id}/initialization"], work, f"initialize {volume_id}")
