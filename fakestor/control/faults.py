"""Faults set on a volume with tags whose key starts `fakestor:fault/`: their forms, and
what each operation reads of them when it starts (attach, detach, snapshot, create, modify,
and the data-plane faults of `io`, pushed to the backend as soon as the tag changes)."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from backends.io_faults import READ, WRITE, IoFault
from fakestor import errors
from fakestor.control.context import Ebs
from fakestor.control.filter_values import INCONSISTENCY
from fakestor.control.resources import from_text, to_text, utcnow

log = logging.getLogger(__name__)

PREFIX = "fakestor:fault/"
ATTACH, DETACH, SNAPSHOT, IO, CREATE, MODIFY = (
    "attach", "detach", "snapshot", "io", "create", "modify"
)  # fmt: skip
FOREVER = "forever"  # a stuck_until that only a forced detach (or the tag, if read) ends
POLL_SECONDS = 0.5  # how often a held snapshot or modification looks at its tag again

FORMS = {
    ATTACH: "stuck or stuck:SECONDS",
    DETACH: "stuck or stuck:SECONDS",
    SNAPSHOT: "stuck:PERCENT or error",
    IO: "error:read, error:write or error:rw (optionally :START-END), latency:MILLISECONDS, "
    "impaired or impaired:SECONDS, or gone",
    CREATE: "error",
    MODIFY: "stuck or stuck:SECONDS",
}

_STUCK = re.compile(r"stuck(?::(\d+(?:\.\d+)?))?")
_SIZE = r"(\d+)([kKmMgG]?)"
_IO_ERROR = re.compile(rf"error:(read|write|rw)(?::{_SIZE}-{_SIZE}?)?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class TagFault:
    """A fault tag on a resource, for `fakestor fault list` and the UI."""

    resource_id: str
    kind: str
    value: str


def parse_stuck(value: str) -> float | None:
    """Seconds a `stuck[:SECONDS]` fault holds (None: until released). Raises ValueError."""
    match = _STUCK.fullmatch(value)
    if match is None:
        raise ValueError(value)
    return float(match.group(1)) if match.group(1) else None


def parse_snapshot(value: str) -> int | None:
    """The percent a `stuck:PERCENT` snapshot stops at, None for `error`. Raises ValueError."""
    if value == "error":
        return None
    match = re.fullmatch(r"stuck:(\d{1,2})", value)
    if match is None:
        raise ValueError(value)
    return int(match.group(1))


def _bytes(number: str, unit: str) -> int:
    return int(number) * _UNITS[unit.lower()]


def parse_io(value: str) -> IoFault:
    """The data-plane fault a `fakestor:fault/io` value describes. Raises ValueError."""
    if value == "impaired":
        return IoFault(impaired=True)
    if value == "gone":
        return IoFault(gone=True)
    if value.startswith("impaired:"):
        seconds = float(value.removeprefix("impaired:"))
        if not 0 < seconds <= 3600:
            raise ValueError(value)
        return IoFault(impaired=True, impaired_timeout=seconds)
    if value.startswith("latency:"):
        milliseconds = float(value.removeprefix("latency:"))
        if not 0 <= milliseconds <= 60_000:
            raise ValueError(value)
        return IoFault(latency=milliseconds / 1000)
    match = _IO_ERROR.fullmatch(value)
    if match is None:
        raise ValueError(value)
    operations = {"read": {READ}, "write": {WRITE}, "rw": {READ, WRITE}}[match.group(1)]
    start, end = 0, None
    if match.group(2):
        start = _bytes(match.group(2), match.group(3))
        if match.group(4):
            end = _bytes(match.group(4), match.group(5))
            if end <= start:
                raise ValueError(value)
    return IoFault(errors=frozenset(operations), start=start, end=end)


def check_value(kind: str, value: str) -> None:
    """Raise ValueError unless `value` is a form of fault `kind` (KeyError: no such kind)."""
    form = FORMS[kind]
    if kind in (ATTACH, DETACH, MODIFY):
        parse_stuck(value)
    elif kind == SNAPSHOT:
        parse_snapshot(value)
    elif kind == IO:
        parse_io(value)
    elif value != "error":
        raise ValueError(form)


def check_fault_tags(resource_type: str, tags: Mapping[str, str]) -> None:
    """Refuse, as InvalidParameterValue, a fault tag that is not one of the forms above."""
    for key, value in tags.items():
        if not key.startswith(PREFIX):
            continue
        kind = key.removeprefix(PREFIX)
        if kind not in FORMS:
            raise errors.InvalidParameterValue(
                f"Tag key '{key}' is not a fakestor fault; use {PREFIX}{{{','.join(FORMS)}}}."
            )
        if resource_type != "volume":
            raise errors.InvalidParameterValue(
                f"Tag key '{key}' is a fakestor fault of volumes; put it on a volume."
            )
        try:
            check_value(kind, value)
        except ValueError:
            raise errors.InvalidParameterValue(
                f"Value '{value}' of tag '{key}' is not a fault; use {FORMS[kind]}."
            ) from None


def tag_value(db: sqlite3.Connection, volume_id: str, kind: str) -> str | None:
    row = db.execute(
        "SELECT value FROM tags WHERE resource_id=? AND key=?", (volume_id, PREFIX + kind)
    ).fetchone()
    return None if row is None else str(row["value"])


# ---- stuck attachments, detachments and modifications --------------------------------


def stuck_until(db: sqlite3.Connection, volume_id: str, kind: str) -> str | None:
    """When an operation of `kind` starting now on the volume is released: None if it
    is not held, FOREVER, or a time (recorded, so a restart resumes the rest of it)."""
    value = tag_value(db, volume_id, kind)
    if value is None:
        return None
    try:
        seconds = parse_stuck(value)
    except ValueError:
        return None
    if seconds is None:
        return FOREVER
    return to_text(utcnow() + timedelta(seconds=seconds))


def stuck_wait(until: str | None) -> float | None:
    """Seconds a recorded hold still lasts: None once over, inf if only a release ends it."""
    if until is None:
        return None
    if until == FOREVER:
        return float("inf")
    left = (from_text(until) - utcnow()).total_seconds()
    return left if left > 0 else None


# ---- snapshots -------------------------------------------------------------------------


def snapshot_fault_at_start(db: sqlite3.Connection, volume_id: str) -> str | None:
    """The snapshot fault a snapshot of the volume starting now takes (recorded with it)."""
    return tag_value(db, volume_id, SNAPSHOT)


def snapshot_hold(ebs: Ebs, snapshot_id: str, volume_id: str) -> str | int | None:
    """What holds a snapshot that started with a fault: 'error', a percent it is stuck at,
    or None. It follows the volume's tag as it is now, so a stuck snapshot fails once the
    tag says `error` and completes once the tag is deleted."""
    with ebs.store.transaction() as db:
        row = db.execute(
            "SELECT fault, delete_requested FROM snapshots WHERE id=?", (snapshot_id,)
        ).fetchone()
        if row is None or row["fault"] is None or row["delete_requested"]:
            return None
        current = tag_value(db, volume_id, SNAPSHOT)
    if current is None:
        return None
    try:
        percent = parse_snapshot(current)
    except ValueError:
        return None
    return "error" if percent is None else percent


def hold_snapshot_at(ebs: Ebs, snapshot_id: str, percent: int) -> None:
    with ebs.store.transaction() as db:
        db.execute(
            "UPDATE snapshots SET progress=? WHERE id=? AND state='pending'",
            (percent, snapshot_id),
        )


# ---- modifications ---------------------------------------------------------------------


def modify_wait(ebs: Ebs, volume_id: str, started: str, recorded: str | None) -> float | None:
    """Seconds a modification that started (at `started`) with fault `recorded` stays in
    `optimizing`: None once released (the tag deleted, or its SECONDS over), inf if held."""
    if recorded is None:
        return None
    with ebs.store.transaction() as db:
        current = tag_value(db, volume_id, MODIFY)
    if current is None:
        return None
    try:
        seconds = parse_stuck(current)
    except ValueError:
        return None
    if seconds is None:
        return float("inf")
    left = (from_text(started) + timedelta(seconds=seconds) - utcnow()).total_seconds()
    return left if left > 0 else None


# ---- the data plane --------------------------------------------------------------------


def io_values(db: sqlite3.Connection, resource_ids: Iterable[str]) -> dict[str, str | None]:
    return {rid: tag_value(db, rid, IO) for rid in resource_ids if rid.startswith("vol-")}


def record_io_changes(db: sqlite3.Connection, before: Mapping[str, str | None]) -> list[str]:
    """After a tag change: start or end the impairment of volumes whose io fault became or
    stopped being `impaired`; returns the volumes whose io fault changed."""
    changed = []
    for volume_id, old in before.items():
        new = tag_value(db, volume_id, IO)
        if new == old:
            continue
        changed.append(volume_id)
        was_impaired = old is not None and old.startswith("impaired")
        is_impaired = new is not None and new.startswith("impaired")
        if is_impaired and not was_impaired:
            _impair(db, volume_id, new or "")
        elif was_impaired and not is_impaired:
            db.execute(
                "UPDATE volumes SET io_enabled=1, status_reason=NULL WHERE id=? AND "
                "status_reason LIKE ?",
                (volume_id, INCONSISTENCY + "%"),
            )
    return changed


def _impair(db: sqlite3.Connection, volume_id: str, value: str) -> None:
    row = db.execute("SELECT auto_enable_io FROM volumes WHERE id=?", (volume_id,)).fetchone()
    cause = f"{INCONSISTENCY} (fault {PREFIX}{IO}={value})"
    if row is not None and row["auto_enable_io"]:
        db.execute(
            "UPDATE volumes SET status_reason=? WHERE id=?",
            (f"{cause}; I/O was enabled again automatically (autoEnableIO).", volume_id),
        )
    else:
        db.execute(
            "UPDATE volumes SET io_enabled=0, status_reason=? WHERE id=?",
            (f"{cause}; I/O is suspended until EnableVolumeIO.", volume_id),
        )


def io_fault(db: sqlite3.Connection, volume_id: str) -> IoFault | None:
    """The fault the volume's I/O meets now: its tag's, impairment only while I/O is
    disabled (EnableVolumeIO or autoEnableIO lift it, the tag staying)."""
    value = tag_value(db, volume_id, IO)
    if value is None:
        return None
    try:
        fault = parse_io(value)
    except ValueError:
        return None
    if fault.impaired:
        row = db.execute("SELECT io_enabled FROM volumes WHERE id=?", (volume_id,)).fetchone()
        if row is None or row["io_enabled"]:
            return None
    return fault


def apply_io_faults(ebs: Ebs, volume_ids: Iterable[str]) -> None:
    """Push the volumes' data-plane faults to the backend (called without the store locked)."""
    for volume_id in volume_ids:
        with ebs.store.transaction() as db:
            fault = io_fault(db, volume_id)
        log.info("I/O fault of %s: %s", volume_id, fault or "none")
        if not ebs.backend.set_io_fault(volume_id, fault) and fault is not None:
            log.warning(
                "the %s backend does not apply %s%s to %s's device now (loopdev: from its "
                "next attach, or at once with --loopdev-policy always)",
                ebs.backend.name, PREFIX, IO, volume_id,
            )  # fmt: skip


def restore_io_faults(ebs: Ebs) -> None:
    """At start: the data-plane faults of every volume that has one."""
    with ebs.store.transaction() as db:
        found = [
            row["resource_id"]
            for row in db.execute("SELECT resource_id FROM tags WHERE key=?", (PREFIX + IO,))
        ]
    apply_io_faults(ebs, found)


def tag_faults(ebs: Ebs) -> list[TagFault]:
    with ebs.store.transaction() as db:
        rows = db.execute(
            "SELECT resource_id, key, value FROM tags WHERE key LIKE ? ORDER BY resource_id, key",
            (PREFIX + "%",),
        ).fetchall()
    return [TagFault(r["resource_id"], r["key"].removeprefix(PREFIX), r["value"]) for r in rows]
