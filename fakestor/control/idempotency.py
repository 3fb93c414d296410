"""ClientToken idempotency of the creating actions whose API takes one (CreateVolume,
CopyVolumes, RunInstances): a retry with the same token gets the first result, other
parameters an error.

A token is recorded in the transaction that creates its resource, so neither exists
without the other, and it is remembered for EC2's retention window, across restarts.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fakestor import errors
from fakestor.control.resources import utcnow
from fakestor.control.states import InstanceState

MAX_TOKEN_LENGTH = 64

# EC2's answer to a replay whose resource is gone (a deleted volume, say): the token
# stays spent until its window closes.
RESOURCE_GONE = (
    "The client token you have provided is associated with a resource that is already "
    "deleted. Please use a different client token."
)


@dataclass(frozen=True)
class ClientToken:
    """A request's ClientToken and a fingerprint of its other parameters (see `fingerprint`)."""

    value: str
    fingerprint: str

    def __post_init__(self) -> None:
        if len(self.value) > MAX_TOKEN_LENGTH:
            raise errors.InvalidParameterValue(
                f"Client token must be less than or equal to {MAX_TOKEN_LENGTH} characters"
            )


def fingerprint(parameters: Mapping[str, Any]) -> str:
    """A digest of a request's parameters: equal for equal parameters, whatever their order."""
    text = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class IdempotentAction:
    """An action that takes a ClientToken: how long a token is remembered, and EC2's
    words when one comes back with other parameters."""

    name: str
    window: timedelta
    mismatch: str
    # The window opens when the resource ends (every instance terminated), not at creation.
    after_end: bool = False


# EC2 forgets a CreateVolume token about 12 hours after its use (as the EBS CSI
# driver measured it; the documentation gives no figure).
CREATE_VOLUME = IdempotentAction(
    "CreateVolume",
    timedelta(hours=12),
    "Parameters on this idempotent request are inconsistent with parameters used in "
    "previous request(s)",
)
# CopyVolumes: EC2 documents no window; fakestor takes CreateVolume's.
COPY_VOLUMES = IdempotentAction("CopyVolumes", CREATE_VOLUME.window, CREATE_VOLUME.mismatch)
# "The client token is valid for at least 24 hours after the termination of the instance."
RUN_INSTANCES = IdempotentAction(
    "RunInstances",
    timedelta(hours=24),
    "Arguments on this idempotent request are inconsistent with arguments used in "
    "previous request(s).",
    after_end=True,
)


def replay(
    db: sqlite3.Connection,
    action: IdempotentAction,
    token: ClientToken | None,
    scope: str,
    *,
    dry_run: bool = False,
) -> str | None:
    """The resource an earlier request with this token made in `scope` (a zone, or ''
    for the region), or None when the token is new here or forgotten.

    Raises IdempotentParameterMismatch when the earlier request had other parameters.
    A DryRun request is only validated: it neither replays nor records.
    """
    if token is None or dry_run:
        return None
    forget_expired(db)
    row = db.execute(
        "SELECT fingerprint, resource_id FROM client_tokens WHERE action=? AND scope=? AND token=?",
        (action.name, scope, token.value),
    ).fetchone()
    if row is None:
        return None
    if row["fingerprint"] != token.fingerprint:
        raise errors.IdempotentParameterMismatch(action.mismatch)
    return str(row["resource_id"])


_Resource = TypeVar("_Resource")


def still_there(found: Sequence[_Resource]) -> Sequence[_Resource]:
    """What a replay returns: the resources as they are now, unless they are gone."""
    if not found:
        raise errors.IdempotentParameterMismatch(RESOURCE_GONE)
    return found


def record(
    db: sqlite3.Connection,
    action: IdempotentAction,
    token: ClientToken | None,
    scope: str,
    resource_id: str,
) -> None:
    """Remember that the token made `resource_id`; call it in the transaction that
    creates the resource."""
    if token is None:
        return
    now = utcnow()
    db.execute(
        "INSERT INTO client_tokens"
        "(action, scope, token, fingerprint, resource_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            action.name,
            scope,
            token.value,
            token.fingerprint,
            resource_id,
            _text(now),
            None if action.after_end else _text(now + action.window),
        ),
    )


def forget_expired(db: sqlite3.Connection) -> None:
    """Drop the tokens whose window has closed; open the windows of ended reservations.

    A reservation's end is noticed here rather than at termination, so its token
    lasts at least the window after the last instance terminated, as on EC2.
    """
    now = utcnow()
    db.execute(
        "UPDATE client_tokens SET expires_at=? WHERE action=? AND expires_at IS NULL AND "
        "NOT EXISTS (SELECT 1 FROM instances "
        "WHERE reservation_id=client_tokens.resource_id AND state!=?)",
        (_text(now + RUN_INSTANCES.window), RUN_INSTANCES.name, InstanceState.TERMINATED),
    )
    db.execute("DELETE FROM client_tokens WHERE expires_at <= ?", (_text(now),))


def _text(moment: datetime) -> str:
    # One fixed width, so that times compare as text in SQL.
    return moment.isoformat(timespec="milliseconds")
