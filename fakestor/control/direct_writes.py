"""The EBS direct APIs' writes: a snapshot started, written block by block and completed
(StartSnapshot, PutSnapshotBlock, CompleteSnapshot), its Timeout, and its resume after a
restart. Reads and block tokens are in direct_snapshots.py.

Timeout. EBS cancels a started snapshot when no block is written to it for Timeout minutes,
or when it is not completed within Timeout minutes of its last block. Here that window is
measured on the lifecycle clock (EC2 minutes divided by `--time-scale`), and never shorter
than SHORTEST_WRITE_WINDOW, so a client's own pauses between requests fit in it; a restart
of the server opens the window again. The snapshot then turns `error`.
"""

from __future__ import annotations

import base64
import hmac
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from backends import BackendError, OutOfSpace
from fakestor import errors
from fakestor.control import kms_keys
from fakestor.control.account import resolve_encryption
from fakestor.control.context import Ebs
from fakestor.control.direct_snapshots import (
    BLOCK_SIZE,
    NO_VOLUME,
    check_index,
    checksum_of,
)
from fakestor.control.lifecycle_clock import scaled
from fakestor.control.loaders import get_snapshot
from fakestor.control.quotas import check_pending_snapshots
from fakestor.control.resources import Snapshot, from_text, to_text, utcnow
from fakestor.control.snapshots import NewSnapshot, finish_snapshot, insert_snapshot
from fakestor.control.states import SnapshotState
from fakestor.control.tasks import RetryLater
from fakestor.direct_errors import (
    ConflictException,
    InternalServerException,
    ResourceNotFoundException,
    ValidationException,
)

LARGEST_VOLUME_GIB = 65536
DEFAULT_TIMEOUT_MINUTES = 60
SHORTEST_WRITE_WINDOW = timedelta(seconds=10)


@dataclass(frozen=True)
class StartSnapshotRequest:
    volume_size: int
    parent_snapshot_id: str | None = None
    tags: Mapping[str, str] | None = None
    description: str | None = None
    client_token: str | None = None
    encrypted: bool | None = None
    kms_key_arn: str | None = None
    timeout_minutes: int | None = None


@dataclass(frozen=True)
class StartedSnapshot:
    snapshot: Snapshot
    parent_snapshot_id: str | None
    kms_key_arn: str | None


def write_window(ebs: Ebs, timeout_minutes: int) -> timedelta:
    """How long a started snapshot may go without a block or a completion, here."""
    return max(scaled(timedelta(minutes=timeout_minutes), ebs.time_scale), SHORTEST_WRITE_WINDOW)


def _window_end(ebs: Ebs, timeout_minutes: int) -> datetime:
    return utcnow() + write_window(ebs, timeout_minutes)


def _fingerprint(request: StartSnapshotRequest) -> str:
    fields = {**request.__dict__, "tags": dict(request.tags or {})}
    fields.pop("client_token")
    return json.dumps(fields, sort_keys=True)


def _started(ebs: Ebs, db: sqlite3.Connection, snapshot_id: str) -> StartedSnapshot:
    row = db.execute(
        "SELECT * FROM direct_snapshots WHERE snapshot_id=?", (snapshot_id,)
    ).fetchone()
    snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
    return StartedSnapshot(snapshot, row["parent_snapshot_id"], row["kms_key_arn"])


def _check_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 127 or len(value) > 255 or key.lower().startswith("aws:"):
            raise ValidationException(
                f"The tag {key!r}={value!r} is not valid: keys are 1 to 127 characters and "
                "may not start with 'aws:', values up to 255.",
                "INVALID_TAG",
            )


def start_snapshot(ebs: Ebs, request: StartSnapshotRequest) -> StartedSnapshot:
    size = request.volume_size
    if not 1 <= size <= LARGEST_VOLUME_GIB:
        raise ValidationException(
            f"The volume size {size} GiB is not valid; it must be 1 to {LARGEST_VOLUME_GIB}.",
            "INVALID_VOLUME_SIZE",
        )
    limit = ebs.backend.size_limit()
    if limit is not None and size > limit.largest_gib:
        raise ValidationException(
            f"The volume size {size} GiB is more than this fakestor can hold: {limit.reason}.",
            "INVALID_VOLUME_SIZE",
        )
    tags = dict(request.tags or {})
    _check_tags(tags)
    timeout = request.timeout_minutes or DEFAULT_TIMEOUT_MINUTES
    fingerprint = _fingerprint(request)
    with ebs.store.transaction() as db:
        if request.client_token is not None:
            row = db.execute(
                "SELECT snapshot_id, fingerprint FROM direct_snapshots WHERE client_token=?",
                (request.client_token,),
            ).fetchone()
            if row is not None and row["fingerprint"] == fingerprint:
                return _started(ebs, db, row["snapshot_id"])
            if row is not None:
                raise ConflictException(
                    f"The client token {request.client_token} was used for a different "
                    f"StartSnapshot request (it started {row['snapshot_id']})."
                )
        parent = None
        if request.parent_snapshot_id is not None:
            try:
                parent = get_snapshot(db, ebs.account_id, request.parent_snapshot_id)
            except errors.Ec2Error:
                raise ResourceNotFoundException(request.parent_snapshot_id) from None
            if parent.state != SnapshotState.COMPLETED:
                raise ValidationException(
                    f"The parent snapshot '{parent.id}' is in the '{parent.state}' state; "
                    "it must be completed.",
                    "INVALID_SNAPSHOT_ID",
                )
            if size < parent.volume_size:
                raise ValidationException(
                    f"The volume size {size} GiB is smaller than the parent snapshot's "
                    f"{parent.volume_size} GiB.",
                    "INVALID_VOLUME_SIZE",
                )
        try:
            encrypted, kms_key_id = resolve_encryption(
                ebs, request.encrypted, request.kms_key_arn, parent, "the new snapshot"
            )
        except errors.Ec2Error as refused:
            raise ValidationException(refused.message, "INVALID_PARAMETER_VALUE") from None
        unusable = kms_keys.unusable_for_ebs(ebs, kms_key_id) if kms_key_id else None
        if encrypted and unusable is not None:
            # StartSnapshot answers at once; no EBS wording was found, so the text is
            # fakestor's and the Reason the model's for a key it cannot use.
            raise ValidationException(
                f"The KMS key {request.kms_key_arn or kms_key_id} cannot be used: {unusable}.",
                "INVALID_CUSTOMER_KEY",
            )
        check_pending_snapshots(db, ebs.pending_snapshot_quota)
        new = NewSnapshot(NO_VOLUME, size, request.description or "", encrypted, kms_key_id)
        snapshot = insert_snapshot(ebs, db, new, tags)
        timeout_at = _window_end(ebs, timeout)
        db.execute(
            "INSERT INTO direct_snapshots(snapshot_id, parent_snapshot_id, kms_key_arn, "
            "timeout_minutes, timeout_at, client_token, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                snapshot.id,
                request.parent_snapshot_id,
                kms_key_id if encrypted else None,
                timeout,
                to_text(timeout_at),
                request.client_token,
                fingerprint,
            ),
        )
        started = _started(ebs, db, snapshot.id)
    _start_data(ebs, snapshot.id, size, request.parent_snapshot_id)
    return started


def _start_data(ebs: Ebs, snapshot_id: str, size: int, parent: str | None) -> None:
    try:
        ebs.backend.start_snapshot_data(snapshot_id, size, parent)
    except BackendError as failure:
        finish_snapshot(ebs, snapshot_id, failure)
        raise InternalServerException(f"fakestor cannot start {snapshot_id}: {failure}") from None
    _submit_timeout(ebs, snapshot_id)


def _submit_timeout(ebs: Ebs, snapshot_id: str) -> None:
    """The task that fails the snapshot if it is not completed within its Timeout."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT d.timeout_at, d.timeout_minutes, d.completing, s.state "
                "FROM direct_snapshots d JOIN snapshots s ON s.id = d.snapshot_id "
                "WHERE d.snapshot_id=?",
                (snapshot_id,),
            ).fetchone()
        if row is None or row["completing"] or row["state"] != SnapshotState.PENDING:
            return
        left = (from_text(row["timeout_at"]) - utcnow()).total_seconds()
        if left > 0:
            raise RetryLater(min(left, 60.0))
        minutes = row["timeout_minutes"]
        finish_snapshot(
            ebs,
            snapshot_id,
            TimeoutError(
                f"no block was written and the snapshot was not completed within its "
                f"timeout of {minutes} minutes"
            ),
        )

    ebs.tasks.submit([f"{snapshot_id}/timeout"], work, f"time out {snapshot_id}")


def _writable(ebs: Ebs, db: sqlite3.Connection, snapshot_id: str) -> Snapshot:
    """A snapshot started through StartSnapshot that takes blocks: pending, not completing."""
    try:
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
    except errors.Ec2Error:
        raise ResourceNotFoundException(snapshot_id) from None
    row = db.execute(
        "SELECT timeout_at, completing FROM direct_snapshots WHERE snapshot_id=?", (snapshot_id,)
    ).fetchone()
    if row is None or snapshot.state != SnapshotState.PENDING or row["completing"]:
        state = "completing" if row is not None and row["completing"] else snapshot.state
        raise ValidationException(
            f"The snapshot '{snapshot_id}' is {state}; blocks can only be written to a "
            "pending snapshot started with StartSnapshot.",
            "INVALID_SNAPSHOT_ID",
        )
    if from_text(row["timeout_at"]) <= utcnow():
        raise ValidationException(
            f"The snapshot '{snapshot_id}' was not completed within its timeout.",
            "WRITE_REQUEST_TIMEOUT",
        )
    return snapshot


def _timeout_minutes(db: sqlite3.Connection, snapshot_id: str) -> int:
    row = db.execute(
        "SELECT timeout_minutes FROM direct_snapshots WHERE snapshot_id=?", (snapshot_id,)
    ).fetchone()
    return int(row["timeout_minutes"])


def put_snapshot_block(
    ebs: Ebs,
    snapshot_id: str,
    block_index: int,
    data: bytes,
    *,
    data_length: int,
    checksum: str,
    checksum_algorithm: str,
    progress: int | None = None,
) -> str:
    """Write one block of a pending snapshot; returns the checksum EBS computed."""
    with ebs.store.transaction() as db:
        snapshot = _writable(ebs, db, snapshot_id)
        written_timeout = _timeout_minutes(db, snapshot_id)
    check_index(snapshot, block_index)
    if data_length != BLOCK_SIZE or len(data) != data_length:
        raise ValidationException(
            f"A block is {BLOCK_SIZE} bytes: x-amz-Data-Length was {data_length} and "
            f"{len(data)} bytes were sent.",
            "INVALID_PARAMETER_VALUE",
        )
    if checksum_algorithm != "SHA256":
        raise ValidationException(
            f"The checksum algorithm {checksum_algorithm} is not supported; use SHA256."
        )
    computed = checksum_of(data)
    # AWS documents only that the request fails (ebsapis-using-checksums); its message was
    # found in no AWS page, SDK or issue thread, so this wording is fakestor's.
    if not hmac.compare_digest(computed, checksum):
        raise ValidationException(
            f"The checksum {checksum} does not match the SHA256 of the block data "
            f"({computed}); the data was damaged in transit or the checksum is wrong.",
            "INVALID_PARAMETER_VALUE",
        )
    try:
        ebs.backend.write_snapshot_block(snapshot_id, block_index, data)
    except OutOfSpace as failure:
        raise InternalServerException(f"fakestor has no room for the block: {failure}") from None
    except BackendError as failure:
        raise InternalServerException(
            f"fakestor cannot write block {block_index} of {snapshot_id}: {failure}"
        ) from None
    with ebs.store.transaction() as db:
        db.execute(
            "INSERT OR REPLACE INTO direct_blocks VALUES (?, ?, ?)",
            (snapshot_id, block_index, computed),
        )
        # A block written opens the Timeout window again.
        db.execute(
            "UPDATE direct_snapshots SET timeout_at=? WHERE snapshot_id=?",
            (to_text(_window_end(ebs, written_timeout)), snapshot_id),
        )
        if progress is not None:
            db.execute(
                f"UPDATE snapshots SET progress=? WHERE id=? AND state='{SnapshotState.PENDING}'",
                (min(progress, 99), snapshot_id),
            )
    return computed


def complete_snapshot(
    ebs: Ebs,
    snapshot_id: str,
    changed_blocks_count: int,
    *,
    checksum: str | None = None,
    checksum_algorithm: str | None = None,
    aggregation_method: str | None = None,
) -> str:
    """Seal the snapshot; returns its status (pending until its data is complete)."""
    with ebs.store.transaction() as db:
        try:
            snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
        except errors.Ec2Error:
            raise ResourceNotFoundException(snapshot_id) from None
        row = db.execute(
            "SELECT completing FROM direct_snapshots WHERE snapshot_id=?", (snapshot_id,)
        ).fetchone()
        if row is not None and (row["completing"] or snapshot.state == SnapshotState.COMPLETED):
            return str(snapshot.state)
        _writable(ebs, db, snapshot_id)
        written = db.execute(
            "SELECT block_index, checksum FROM direct_blocks WHERE snapshot_id=? "
            "ORDER BY block_index",
            (snapshot_id,),
        ).fetchall()
        if changed_blocks_count != len(written):
            raise ValidationException(
                f"ChangedBlocksCount is {changed_blocks_count}, but {len(written)} blocks were "
                f"written to {snapshot_id}.",
                "INVALID_PARAMETER_VALUE",
            )
        if checksum is not None:
            _check_aggregate(checksum, checksum_algorithm, aggregation_method, written)
        db.execute("UPDATE direct_snapshots SET completing=1 WHERE snapshot_id=?", (snapshot_id,))
    _submit_complete(ebs, snapshot_id)
    return str(SnapshotState.PENDING)


def _check_aggregate(
    checksum: str, algorithm: str | None, method: str | None, written: Sequence[sqlite3.Row]
) -> None:
    """The LINEAR aggregate: the SHA-256 of the blocks' SHA-256s in index order."""
    if algorithm != "SHA256" or method != "LINEAR":
        raise ValidationException(
            "An aggregate checksum needs x-amz-Checksum-Algorithm SHA256 and "
            "x-amz-Checksum-Aggregation-Method LINEAR."
        )
    digests = b"".join(base64.b64decode(row["checksum"]) for row in written)
    if checksum_of(digests) != checksum:
        raise ValidationException(
            f"The aggregate checksum {checksum} does not match the blocks written "
            f"({checksum_of(digests)}).",
            "INVALID_PARAMETER_VALUE",
        )


def _submit_complete(ebs: Ebs, snapshot_id: str) -> None:
    def work() -> None:
        try:
            ebs.backend.complete_snapshot_data(snapshot_id)
        except BackendError as failure:
            finish_snapshot(ebs, snapshot_id, failure)
            return
        finish_snapshot(ebs, snapshot_id, None)
        with ebs.store.transaction() as db:
            db.execute("DELETE FROM direct_blocks WHERE snapshot_id=?", (snapshot_id,))

    ebs.tasks.submit(
        [snapshot_id],
        work,
        f"complete {snapshot_id}",
        on_failure=lambda failure: finish_snapshot(ebs, snapshot_id, failure),
    )


def is_direct(ebs: Ebs, snapshot_id: str) -> bool:
    with ebs.store.transaction() as db:
        return (
            db.execute(
                "SELECT 1 FROM direct_snapshots WHERE snapshot_id=?", (snapshot_id,)
            ).fetchone()
            is not None
        )


def resume_direct_snapshot(ebs: Ebs, snapshot_id: str) -> None:
    """After a restart: finish a completion, or take blocks again until the timeout."""
    with ebs.store.transaction() as db:
        row = db.execute(
            "SELECT d.completing, d.parent_snapshot_id, d.timeout_minutes, s.volume_size "
            "FROM direct_snapshots d JOIN snapshots s ON s.id = d.snapshot_id "
            "WHERE d.snapshot_id=?",
            (snapshot_id,),
        ).fetchone()
        if row is not None and not row["completing"]:
            # The client could not write while the server was down: the window opens again.
            db.execute(
                "UPDATE direct_snapshots SET timeout_at=? WHERE snapshot_id=?",
                (to_text(_window_end(ebs, row["timeout_minutes"])), snapshot_id),
            )
    if row is None:
        return
    if row["completing"]:
        _submit_complete(ebs, snapshot_id)
        return

    def work() -> None:
        try:
            ebs.backend.start_snapshot_data(
                snapshot_id, row["volume_size"], row["parent_snapshot_id"]
            )
        except BackendError as failure:
            finish_snapshot(ebs, snapshot_id, failure)
            return
        _submit_timeout(ebs, snapshot_id)

    ebs.tasks.submit([snapshot_id], work, f"resume {snapshot_id}")
