"""The end of a snapshot: its record removed in the caller's transaction, then its data
deleted through the backend by a task that a trash row carries across a crash."""

from __future__ import annotations

import logging
import sqlite3

from backends import BackendError
from fakestor.control.context import Ebs

log = logging.getLogger(__name__)


def remove_snapshot(db: sqlite3.Connection, snapshot_id: str) -> None:
    db.execute("DELETE FROM snapshot_permissions WHERE snapshot_id=?", (snapshot_id,))
    db.execute("DELETE FROM tags WHERE resource_id=?", (snapshot_id,))
    for lifecycle in ("snapshot_locks", "snapshot_tiers", "fast_snapshot_restores"):
        db.execute(f"DELETE FROM {lifecycle} WHERE snapshot_id=?", (snapshot_id,))
    db.execute("DELETE FROM snapshots WHERE id=?", (snapshot_id,))
    # The data goes in the background; the trash row carries that across a crash.
    db.execute("INSERT OR IGNORE INTO trash VALUES ('snapshot', ?)", (snapshot_id,))


def submit_empty_trash(ebs: Ebs, snapshot_id: str) -> None:
    def work() -> None:
        try:
            ebs.backend.delete_snapshot(snapshot_id)
        except BackendError as failure:
            log.warning("deleting the data of %s failed: %s", snapshot_id, failure)
            return
        with ebs.store.transaction() as db:
            db.execute("DELETE FROM trash WHERE kind='snapshot' AND resource_id=?", (snapshot_id,))

    # Volumes restored from it keep their own copy of the data, as on EBS.
    ebs.tasks.submit([snapshot_id], work, f"delete {snapshot_id}")
