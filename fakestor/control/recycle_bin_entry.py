"""How a deleted volume or deregistered image enters the Recycle Bin: the rule that retains it
and its row in `binned_resources`. While that row exists the resource keeps its record and
data but is hidden from every use but listing, restoring and tagging (recycle_bin_resources.py
lists, restores and purges)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import timedelta

from fakestor.control.context import Ebs
from fakestor.control.lifecycle_clock import due_after, seconds_until
from fakestor.control.recycle_bin_rules import retaining_rule
from fakestor.control.resources import to_text, utcnow
from fakestor.control.states import BinState

VOLUME, IMAGE = "volume", "image"
RESOURCE_TYPES = {VOLUME: "EBS_VOLUME", IMAGE: "EC2_IMAGE"}  # the rules' ResourceType


def binned_ids(db: sqlite3.Connection, kind: str) -> set[str]:
    """The ids of the resources of `kind` that are in the bin."""
    rows = db.execute("SELECT resource_id FROM binned_resources WHERE kind=?", (kind,))
    return {row["resource_id"] for row in rows}


def retain(
    ebs: Ebs, db: sqlite3.Connection, kind: str, resource_id: str, tags: Mapping[str, str]
) -> bool:
    """Put a resource being deleted into the bin if a rule retains it (True); the caller
    then leaves its record and data alone and submits the purge (submit_bin_purge)."""
    rule = retaining_rule(ebs, db, RESOURCE_TYPES[kind], tags)
    if rule is None:
        return False
    exit_time = due_after(timedelta(days=rule.retention_days), ebs.time_scale)
    db.execute(
        "INSERT OR REPLACE INTO binned_resources(kind, resource_id, rule_id, enter_time, "
        "exit_time, state) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, resource_id, rule.identifier, to_text(utcnow()), to_text(exit_time),
         BinState.RECOVERABLE),
    )  # fmt: skip
    return True


def expire(db: sqlite3.Connection, kind: str, resource_id: str) -> float | None:
    """The purge's check: None if the resource has left the bin (restored), the seconds
    until its retention ends, or 0 once it has ended (its bin row is then removed, and
    the caller removes the resource in the same transaction)."""
    row = db.execute(
        "SELECT exit_time FROM binned_resources WHERE kind=? AND resource_id=?",
        (kind, resource_id),
    ).fetchone()
    if row is None:
        return None
    wait = seconds_until(row["exit_time"])
    if wait <= 0:
        db.execute(
            "DELETE FROM binned_resources WHERE kind=? AND resource_id=?", (kind, resource_id)
        )
    return wait
