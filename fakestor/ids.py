"""Resource identifiers in AWS's shape: a prefix and 17 lowercase hex digits."""

from __future__ import annotations

import hashlib
import re
import secrets

from fakestor import errors

VOLUME = "vol"
SNAPSHOT = "snap"
INSTANCE = "i"
RESERVATION = "r"
IMAGE = "ami"

# EC2 accepts the old 8-digit ids as well as the 17-digit ones.
_ID_PATTERN = re.compile(r"(vol|snap|i|r|ami)-(?:[0-9a-f]{8}|[0-9a-f]{17})")

_MALFORMED: dict[str, type[errors.Ec2Error]] = {
    VOLUME: errors.InvalidVolumeIdMalformed,
    SNAPSHOT: errors.InvalidSnapshotIdMalformed,
    INSTANCE: errors.InvalidInstanceIdMalformed,
}


def new_id(prefix: str) -> str:
    """A fresh random id such as ``vol-0123456789abcdef0``."""
    return f"{prefix}-{secrets.token_hex(9)[:17]}"


def stable_id(prefix: str, seed: str) -> str:
    """An id derived from `seed`, the same on every run (the host's instance id)."""
    return f"{prefix}-{hashlib.sha256(seed.encode()).hexdigest()[:17]}"


def kind_of(resource_id: str) -> str | None:
    """The prefix of a well-formed id, or None."""
    match = _ID_PATTERN.fullmatch(resource_id)
    return match.group(1) if match else None


def check(prefix: str, resource_id: str) -> str:
    """Return `resource_id` if it is a well-formed id of that kind, else raise EC2's error."""
    if kind_of(resource_id) != prefix:
        raise _MALFORMED[prefix](resource_id)
    return resource_id
