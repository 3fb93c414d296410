"""The EBS direct APIs over the one snapshot table: list, compare and read the blocks of
completed snapshots, and write new snapshots block by block (start, put, complete).

Block and page tokens are HMACs under a secret kept in the state store's settings, so a
token names one snapshot and block (or one listing position) and cannot be forged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from backends import SNAPSHOT_BLOCK_SIZE, BackendError, OutOfSpace
from fakestor import errors
from fakestor.control import kms_keys
from fakestor.control.account import resolve_encryption
from fakestor.control.context import Ebs
from fakestor.control.loaders import get_snapshot, load_volumes
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

log = logging.getLogger(__name__)

BLOCK_SIZE = SNAPSHOT_BLOCK_SIZE
BLOCKS_PER_GIB = 1024**3 // BLOCK_SIZE
LARGEST_VOLUME_GIB = 65536
TOKEN_LIFETIME = timedelta(days=7)
DEFAULT_TIMEOUT_MINUTES = 60
MAX_RESULTS = 10000
# What EBS shows as the volume of a snapshot no volume of this account made.
NO_VOLUME = "vol-ffffffff"
_SECRET_KEY = "direct_api_secret"
_T = TypeVar("_T")


@dataclass(frozen=True)
class BlockPage:
    """One page of a listing: (index, first token, second token) per block."""

    blocks: list[tuple[int, str | None, str | None]]
    expiry_time: datetime
    volume_size: int
    next_token: str | None


@dataclass(frozen=True)
class BlockData:
    data: bytes
    checksum: str  # base64 SHA-256


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


# ---- tokens --------------------------------------------------------------------------


def _secret(ebs: Ebs) -> bytes:
    with ebs.store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO settings(key, value) VALUES (?, ?)",
            (_SECRET_KEY, secrets.token_hex(32)),
        )
        row = db.execute("SELECT value FROM settings WHERE key=?", (_SECRET_KEY,)).fetchone()
    return bytes.fromhex(row["value"])


def _mac(secret: bytes, *parts: object) -> bytes:
    message = "|".join(str(part) for part in parts).encode()
    return hmac.new(secret, message, hashlib.sha256).digest()[:24]


def _block_token(secret: bytes, snapshot_id: str, index: int, expiry: int) -> str:
    mac = _mac(secret, "block", snapshot_id, index, expiry)
    return base64.b64encode(struct.pack(">Q", expiry) + mac).decode()


def _check_block_token(secret: bytes, snapshot_id: str, index: int, token: str) -> None:
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        (expiry,) = struct.unpack(">Q", raw[:8])
        if hmac.compare_digest(raw[8:], _mac(secret, "block", snapshot_id, index, expiry)):
            if expiry < utcnow().timestamp():
                raise ValidationException(
                    "The block token has expired; list the blocks again for a new one.",
                    "INVALID_BLOCK_TOKEN",
                )
            return
    raise ValidationException(
        f"The block token is not valid for block {index} of snapshot {snapshot_id}.",
        "INVALID_BLOCK_TOKEN",
    )


def _page_token(secret: bytes, listing: str, index: int) -> str:
    return base64.b64encode(
        struct.pack(">Q", index) + _mac(secret, "page", listing, index)
    ).decode()


def _page_start(secret: bytes, listing: str, token: str) -> int:
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        (index,) = struct.unpack(">Q", raw[:8])
        if hmac.compare_digest(raw[8:], _mac(secret, "page", listing, index)):
            return int(index)
    raise ValidationException("The pagination token is not valid.", "INVALID_PAGE_TOKEN")


# ---- reads ---------------------------------------------------------------------------


def _readable(ebs: Ebs, snapshot_id: str) -> Snapshot:
    """A snapshot whose blocks may be read: it exists and is completed."""
    try:
        with ebs.store.transaction() as db:
            snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
    except (errors.InvalidSnapshotNotFound, errors.Ec2Error):
        raise ResourceNotFoundException(snapshot_id) from None
    if snapshot.state != SnapshotState.COMPLETED:
        raise ValidationException(
            f"The snapshot '{snapshot_id}' is in the '{snapshot.state}' state; only "
            "completed snapshots can be read.",
            "INVALID_SNAPSHOT_ID",
        )
    return snapshot


def _backend_call(call: Callable[[], _T], what: str) -> _T:
    try:
        return call()
    except BackendError as failure:
        log.warning("%s failed: %s", what, failure)
        raise InternalServerException(f"fakestor cannot {what}: {failure}") from None


def _page(
    ebs: Ebs,
    listing: str,
    entries: Sequence[tuple[int, str | None, str | None]],
    volume_size: int,
    expiry: datetime,
    max_results: int | None,
    next_token: str | None,
    starting_block_index: int | None,
) -> BlockPage:
    secret = _secret(ebs)
    start = starting_block_index or 0
    if next_token is not None:
        start = max(start, _page_start(secret, listing, next_token))
    limit = max_results or MAX_RESULTS
    remaining = [entry for entry in entries if entry[0] >= start]
    page = remaining[:limit]
    token = _page_token(secret, listing, remaining[limit][0]) if len(remaining) > limit else None
    return BlockPage(page, expiry, volume_size, token)


def _expiry() -> tuple[datetime, int]:
    expiry = (utcnow() + TOKEN_LIFETIME).replace(microsecond=0)
    return expiry, int(expiry.timestamp())


def list_snapshot_blocks(
    ebs: Ebs,
    snapshot_id: str,
    *,
    max_results: int | None = None,
    next_token: str | None = None,
    starting_block_index: int | None = None,
) -> BlockPage:
    snapshot = _readable(ebs, snapshot_id)
    blocks = _backend_call(
        lambda: ebs.backend.snapshot_blocks(snapshot_id), f"list the blocks of {snapshot_id}"
    )
    secret = _secret(ebs)
    expiry, stamp = _expiry()
    entries = [(i, _block_token(secret, snapshot_id, i, stamp), None) for i in blocks]
    return _page(
        ebs, f"blocks|{snapshot_id}", entries, snapshot.volume_size, expiry,
        max_results, next_token, starting_block_index,
    )  # fmt: skip


def _lineage(ebs: Ebs, snapshot_id: str) -> set[str]:
    """The snapshots and volumes `snapshot_id` descends from, itself included."""
    found: set[str] = set()
    todo = [snapshot_id]
    with ebs.store.transaction() as db:
        volumes = {volume.id: volume for volume in load_volumes(db)}
        while todo:
            current = todo.pop()
            if current in found:
                continue
            found.add(current)
            row = db.execute(
                "SELECT s.volume_id, s.source_snapshot_id, d.parent_snapshot_id FROM snapshots s "
                "LEFT JOIN direct_snapshots d ON d.snapshot_id = s.id WHERE s.id=?",
                (current,),
            ).fetchone()
            if row is None:
                continue
            todo += [p for p in (row["source_snapshot_id"], row["parent_snapshot_id"]) if p]
            volume_id = row["volume_id"]
            if volume_id != NO_VOLUME:
                found.add(volume_id)
                volume = volumes.get(volume_id)
                if volume is not None and volume.snapshot_id:
                    todo.append(volume.snapshot_id)
    return found


def list_changed_blocks(
    ebs: Ebs,
    second_snapshot_id: str,
    *,
    first_snapshot_id: str | None = None,
    max_results: int | None = None,
    next_token: str | None = None,
    starting_block_index: int | None = None,
) -> BlockPage:
    second = _readable(ebs, second_snapshot_id)
    secret = _secret(ebs)
    expiry, stamp = _expiry()
    entries: list[tuple[int, str | None, str | None]]
    if first_snapshot_id is None:
        blocks = _backend_call(
            lambda: ebs.backend.snapshot_blocks(second_snapshot_id),
            f"list the blocks of {second_snapshot_id}",
        )
        entries = [
            (i, None, _block_token(secret, second_snapshot_id, i, stamp)) for i in blocks
        ]  # fmt: skip
    else:
        _readable(ebs, first_snapshot_id)
        if not _lineage(ebs, first_snapshot_id) & _lineage(ebs, second_snapshot_id):
            raise ValidationException(
                f"The snapshots {first_snapshot_id} and {second_snapshot_id} are not of the "
                "same volume lineage.",
                "UNRELATED_SNAPSHOTS",
            )
        changed = _backend_call(
            lambda: ebs.backend.changed_blocks(first_snapshot_id, second_snapshot_id),
            f"compare {first_snapshot_id} with {second_snapshot_id}",
        )
        in_first = set(
            _backend_call(
                lambda: ebs.backend.snapshot_blocks(first_snapshot_id),
                f"list the blocks of {first_snapshot_id}",
            )
        )
        in_second = set(
            _backend_call(
                lambda: ebs.backend.snapshot_blocks(second_snapshot_id),
                f"list the blocks of {second_snapshot_id}",
            )
        )
        entries = [
            (
                i,
                _block_token(secret, first_snapshot_id, i, stamp) if i in in_first else None,
                _block_token(secret, second_snapshot_id, i, stamp) if i in in_second else None,
            )
            for i in changed
        ]
    listing = f"changed|{first_snapshot_id or ''}|{second_snapshot_id}"
    return _page(
        ebs, listing, entries, second.volume_size, expiry,
        max_results, next_token, starting_block_index,
    )  # fmt: skip


def get_snapshot_block(ebs: Ebs, snapshot_id: str, block_index: int, block_token: str) -> BlockData:
    _check_block_token(_secret(ebs), snapshot_id, block_index, block_token)
    snapshot = _readable(ebs, snapshot_id)
    _check_index(snapshot, block_index)
    data = _backend_call(
        lambda: ebs.backend.read_snapshot_block(snapshot_id, block_index),
        f"read block {block_index} of {snapshot_id}",
    )
    return BlockData(data, _checksum(data))


def _check_index(snapshot: Snapshot, block_index: int) -> None:
    blocks = snapshot.volume_size * BLOCKS_PER_GIB
    if block_index >= blocks:
        raise ValidationException(
            f"Block index {block_index} is beyond the end of snapshot {snapshot.id}, whose "
            f"{snapshot.volume_size} GiB hold blocks 0 to {blocks - 1}.",
            "INVALID_BLOCK",
        )


def _checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# ---- writes --------------------------------------------------------------------------


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
        new = NewSnapshot(NO_VOLUME, size, request.description or "", encrypted, kms_key_id)
        snapshot = insert_snapshot(ebs, db, new, tags)
        timeout_at = utcnow() + timedelta(minutes=timeout)
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
            TimeoutError(f"the snapshot was not completed within its timeout of {minutes} minutes"),
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
    _check_index(snapshot, block_index)
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
    computed = _checksum(data)
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
    if _checksum(digests) != checksum:
        raise ValidationException(
            f"The aggregate checksum {checksum} does not match the blocks written "
            f"({_checksum(digests)}).",
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
            "SELECT d.completing, d.parent_snapshot_id, s.volume_size FROM direct_snapshots d "
            "JOIN snapshots s ON s.id = d.snapshot_id WHERE d.snapshot_id=?",
            (snapshot_id,),
        ).fetchone()
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
