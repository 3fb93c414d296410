"""The EBS direct APIs over the one snapshot table: list, compare and read the blocks of
completed snapshots (writes are in direct_writes.py).

Block and page tokens are HMACs under a secret kept in the state store's settings, so a
token names one snapshot and block (or one listing position) and cannot be forged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import struct
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from backends import SNAPSHOT_BLOCK_SIZE, BackendError
from fakestor import errors
from fakestor.control.context import Ebs
from fakestor.control.lifecycle_clock import scaled
from fakestor.control.loaders import get_snapshot, load_volumes
from fakestor.control.resources import Snapshot, utcnow
from fakestor.control.state_store import StateStore
from fakestor.control.states import SnapshotState
from fakestor.direct_errors import (
    InternalServerException,
    ResourceNotFoundException,
    ValidationException,
)

log = logging.getLogger(__name__)

BLOCK_SIZE = SNAPSHOT_BLOCK_SIZE
BLOCKS_PER_GIB = 1024**3 // BLOCK_SIZE
TOKEN_LIFETIME = timedelta(days=7)
# A listing's NextToken lasts 60 minutes (the EBS direct APIs FAQ), divided by the server's
# --time-scale but never below 10 s, so a client paging through a listing keeps up.
PAGE_TOKEN_LIFETIME = timedelta(minutes=60)
SHORTEST_PAGE_TOKEN_LIFETIME = timedelta(seconds=10)
MAX_RESULTS = 10000
# What EBS shows as the volume of a snapshot no volume of this account made.
NO_VOLUME = "vol-ffffffff"
_SECRET_KEY = "direct_api_secret"
_SECRETS: weakref.WeakKeyDictionary[StateStore, bytes] = weakref.WeakKeyDictionary()
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


# ---- tokens --------------------------------------------------------------------------


def _secret(ebs: Ebs) -> bytes:
    # Made once per state store and never changed: kept in memory after the first read,
    # so a GetSnapshotBlock costs one transaction, not two.
    known = _SECRETS.get(ebs.store)
    if known is not None:
        return known
    with ebs.store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO settings(key, value) VALUES (?, ?)",
            (_SECRET_KEY, secrets.token_hex(32)),
        )
        row = db.execute("SELECT value FROM settings WHERE key=?", (_SECRET_KEY,)).fetchone()
    secret = _SECRETS[ebs.store] = bytes.fromhex(row["value"])
    return secret


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


def _page_token(ebs: Ebs, secret: bytes, listing: str, index: int) -> str:
    lifetime = max(scaled(PAGE_TOKEN_LIFETIME, ebs.time_scale), SHORTEST_PAGE_TOKEN_LIFETIME)
    expiry = int((utcnow() + lifetime).timestamp())
    return base64.b64encode(
        struct.pack(">QQ", index, expiry) + _mac(secret, "page", listing, index, expiry)
    ).decode()


def _page_start(secret: bytes, listing: str, token: str) -> int:
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 40:
        index, expiry = struct.unpack(">QQ", raw[:16])
        if hmac.compare_digest(raw[16:], _mac(secret, "page", listing, index, expiry)):
            if expiry < utcnow().timestamp():
                # The wording is fakestor's; the reason is the model's.
                raise ValidationException(
                    "The pagination token has expired; list again from the start.",
                    "INVALID_PAGE_TOKEN",
                )
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
        # AWS documents that only completed snapshots are readable (ebsapi-faq), not the
        # message; this wording is fakestor's.
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
    token = (
        _page_token(ebs, secret, listing, remaining[limit][0]) if len(remaining) > limit else None
    )
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
        volumes = {volume.id: volume for volume in load_volumes(db, in_recycle_bin=True)}
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
    check_index(snapshot, block_index)
    data = _backend_call(
        lambda: ebs.backend.read_snapshot_block(snapshot_id, block_index),
        f"read block {block_index} of {snapshot_id}",
    )
    return BlockData(data, checksum_of(data))


def check_index(snapshot: Snapshot, block_index: int) -> None:
    blocks = snapshot.volume_size * BLOCKS_PER_GIB
    if block_index >= blocks:
        raise ValidationException(
            f"Block index {block_index} is beyond the end of snapshot {snapshot.id}, whose "
            f"{snapshot.volume_size} GiB hold blocks 0 to {blocks - 1}.",
            "INVALID_BLOCK",
        )


def checksum_of(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
