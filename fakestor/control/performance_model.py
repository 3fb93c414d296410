"""Which volumes the EBS performance model (backends/performance.py) applies to, and
telling the data plane: on for every volume with `fakestor server --performance-model`,
or per volume with the tag `fakestor:performance-model` = `on` / `off`, which wins.

The data plane is told when a volume's limits may change: at server start, when an
attach completes, when a modification reaches `optimizing` (EBS applies the new limits
then), and when the tag is set or removed.
"""

from __future__ import annotations

import logging
import sqlite3

from backends.performance import VolumeShape
from fakestor.control.context import Ebs
from fakestor.control.states import VolumeState

log = logging.getLogger(__name__)

TAG = "fakestor:performance-model"
ON, OFF = "on", "off"


def shape_for(ebs: Ebs, db: sqlite3.Connection, volume_id: str) -> VolumeShape | None:
    """The volume's shape if the model applies to it, else None."""
    row = db.execute(
        "SELECT v.volume_type, v.size, v.iops, v.throughput, t.value AS model FROM volumes v "
        "LEFT JOIN tags t ON t.resource_id = v.id AND t.key = ? WHERE v.id = ?",
        (TAG, volume_id),
    ).fetchone()
    if row is None:
        return None
    wanted = row["model"].lower() == ON if row["model"] is not None else ebs.performance_model
    if not wanted:
        return None
    return VolumeShape(row["volume_type"], row["size"], row["iops"], row["throughput"])


def apply(ebs: Ebs, volume_id: str) -> None:
    """Give the data plane the volume's current limits (or none)."""
    with ebs.store.transaction() as db:
        shape = shape_for(ebs, db, volume_id)
    apply_shape(ebs, volume_id, shape)


def apply_shape(ebs: Ebs, volume_id: str, shape: VolumeShape | None) -> None:
    """Give the data plane limits read with `shape_for` (in the caller's transaction)."""
    if not ebs.backend.set_performance(volume_id, shape, ebs.credit_time_scale) and shape:
        log.warning(
            "the %s backend's data path does not enforce EBS's performance model on %s now: "
            "it runs unlimited (loopdev: until its next attach)",
            ebs.backend.name,
            volume_id,
        )


def apply_all(ebs: Ebs) -> None:
    """At start: every volume that exists gets its limits."""
    with ebs.store.transaction() as db:
        ids = [
            row["id"]
            for row in db.execute(
                "SELECT id FROM volumes WHERE state IN (?, ?)",
                (VolumeState.AVAILABLE, VolumeState.IN_USE),
            )
        ]
    for volume_id in ids:
        apply(ebs, volume_id)


def check_tag_value(key: str, value: str | None) -> str | None:
    """The error for a bad `fakestor:performance-model` value, None if it is fine."""
    if key != TAG or value is None or value.lower() in (ON, OFF):
        return None
    return f"The tag {TAG} takes the value '{ON}' or '{OFF}', not '{value}'."
