"""KMS keys of a region: create, describe, list, enable, disable, schedule and cancel deletion,
the AWS managed key `alias/aws/ebs`, and how EBS resolves and checks the key it is given.

A key id is a UUID (`mrk-` and 32 hex digits for a multi-Region key); its ARN is
arn:aws:kms:REGION:ACCOUNT:key/ID. A key scheduled for deletion is deleted, with its
aliases and tags, once its waiting period (7-30 days, scaled by --time-scale) has passed.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from fakestor import kms_errors
from fakestor.control.context import Ebs
from fakestor.control.lifecycle_clock import due_after
from fakestor.control.resources import from_text, to_text, utcnow

ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"
AWS, CUSTOMER = "AWS", "CUSTOMER"
SYMMETRIC = "SYMMETRIC_DEFAULT"

AWS_EBS_ALIAS = "alias/aws/ebs"
# The description AWS gives the AWS managed key for EBS.
AWS_EBS_DESCRIPTION = "Default key that protects my EBS volumes when no other key is defined"

# ScheduleKeyDeletion's waiting period: the model allows 1-365, KMS takes 7-30.
MIN_WINDOW_DAYS, MAX_WINDOW_DAYS, DEFAULT_WINDOW_DAYS = 7, 30, 30

# The key usages each key spec allows, and the algorithms KeyMetadata lists for them
# (KMS developer guide, "Key spec reference").
USAGES = {
    "SYMMETRIC_DEFAULT": ("ENCRYPT_DECRYPT",),
    "RSA_2048": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
    "RSA_3072": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
    "RSA_4096": ("ENCRYPT_DECRYPT", "SIGN_VERIFY"),
    "ECC_NIST_P256": ("SIGN_VERIFY", "KEY_AGREEMENT"),
    "ECC_NIST_P384": ("SIGN_VERIFY", "KEY_AGREEMENT"),
    "ECC_NIST_P521": ("SIGN_VERIFY", "KEY_AGREEMENT"),
    "ECC_SECG_P256K1": ("SIGN_VERIFY",),
    "HMAC_224": ("GENERATE_VERIFY_MAC",),
    "HMAC_256": ("GENERATE_VERIFY_MAC",),
    "HMAC_384": ("GENERATE_VERIFY_MAC",),
    "HMAC_512": ("GENERATE_VERIFY_MAC",),
}

_KEY_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|mrk-[0-9a-f]{32}")
_ARN = re.compile(r"arn:aws:kms:([a-z0-9-]+):([0-9]{12}):(key|alias)/(.+)")


@dataclass
class KmsKey:
    id: str
    arn: str
    account_id: str
    description: str
    key_usage: str
    key_spec: str
    origin: str
    key_manager: str
    state: str
    creation_date: datetime
    deletion_date: datetime | None
    pending_window_days: int | None
    multi_region: bool
    region: str

    @property
    def enabled(self) -> bool:
        return self.state == ENABLED


@dataclass(frozen=True)
class KeyRequest:
    description: str = ""
    key_usage: str | None = None
    key_spec: str | None = None
    origin: str = "AWS_KMS"
    multi_region: bool = False
    policy: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def key_arn(ebs: Ebs, key_id: str) -> str:
    return f"arn:aws:kms:{ebs.region.name}:{ebs.account_id}:key/{key_id}"


def alias_arn(ebs: Ebs, name: str) -> str:
    return f"arn:aws:kms:{ebs.region.name}:{ebs.account_id}:{name}"


def _key_of(ebs: Ebs, row: sqlite3.Row) -> KmsKey:
    return KmsKey(
        id=row["id"],
        arn=key_arn(ebs, row["id"]),
        account_id=ebs.account_id,
        description=row["description"],
        key_usage=row["key_usage"],
        key_spec=row["key_spec"],
        origin=row["origin"],
        key_manager=row["key_manager"],
        state=row["state"],
        creation_date=from_text(row["creation_date"]),
        deletion_date=from_text(row["deletion_date"]) if row["deletion_date"] else None,
        pending_window_days=row["pending_window_days"],
        multi_region=bool(row["multi_region"]),
        region=ebs.region.name,
    )


def purge_deleted(db: sqlite3.Connection) -> None:
    """Delete the keys whose waiting period is over, with their aliases and tags."""
    now = utcnow()
    doomed = [
        row["id"]
        for row in db.execute(
            "SELECT id, deletion_date FROM kms_keys WHERE state=?", (PENDING_DELETION,)
        )
        if from_text(row["deletion_date"]) <= now
    ]
    for key_id in doomed:
        db.execute("DELETE FROM kms_aliases WHERE key_id=?", (key_id,))
        db.execute("DELETE FROM kms_key_tags WHERE key_id=?", (key_id,))
        db.execute("DELETE FROM kms_keys WHERE id=?", (key_id,))


def ensure_predefined_aliases(db: sqlite3.Connection) -> None:
    """AWS predefines `alias/aws/ebs` in every account and region; its key comes later."""
    if db.execute("SELECT 1 FROM kms_aliases WHERE name=?", (AWS_EBS_ALIAS,)).fetchone():
        return
    now = to_text(utcnow())
    db.execute(
        "INSERT INTO kms_aliases(name, key_id, creation_date, last_updated) VALUES (?, NULL, ?, ?)",
        (AWS_EBS_ALIAS, now, now),
    )


def _insert_key(
    db: sqlite3.Connection, key_id: str, request: KeyRequest, key_spec: str, key_usage: str,
    key_manager: str,
) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO kms_keys(id, description, key_usage, key_spec, origin, key_manager, "
        "state, creation_date, multi_region, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key_id, request.description, key_usage, key_spec, request.origin, key_manager,
            ENABLED, to_text(utcnow()), int(request.multi_region), request.policy,
        ),
    )  # fmt: skip


def create_key(ebs: Ebs, request: KeyRequest) -> KmsKey:
    """A customer managed key, Enabled at once (key material is AWS_KMS's, made here)."""
    key_spec = request.key_spec or SYMMETRIC
    if key_spec not in USAGES:
        raise kms_errors.UnsupportedOperationException(
            f"{key_spec} keys are not supported by fakestor's KMS."
        )
    key_usage = request.key_usage or USAGES[key_spec][0]
    if key_usage not in USAGES[key_spec]:
        raise kms_errors.ValidationException(
            f"KeyUsage {key_usage} is not compatible with KeySpec {key_spec}."
        )
    if request.origin != "AWS_KMS":
        raise kms_errors.UnsupportedOperationException(
            f"Origin {request.origin} is not supported by fakestor's KMS; use AWS_KMS."
        )
    check_tags(request.tags)
    key_id = "mrk-" + uuid.uuid4().hex if request.multi_region else str(uuid.uuid4())
    with ebs.store.transaction() as db:
        _insert_key(db, key_id, request, key_spec, key_usage, CUSTOMER)
        db.executemany(
            "INSERT OR REPLACE INTO kms_key_tags VALUES (?, ?, ?)",
            [(key_id, k, v) for k, v in request.tags],
        )
        return _key_of(ebs, _row(db, key_id))


def check_tags(tags: tuple[tuple[str, str], ...]) -> None:
    """Tag keys are 1-128 characters, values 0-256, and `aws:` is AWS's own prefix."""
    for tag_key, tag_value in tags:
        if not 1 <= len(tag_key) <= 128 or len(tag_value) > 256:
            raise kms_errors.TagException(
                f"Tag {tag_key!r}: keys take 1-128 characters and values 0-256."
            )
        if tag_key.lower().startswith("aws:"):
            raise kms_errors.TagException(f"Tag key {tag_key!r}: the aws: prefix is AWS's own.")


def _row(db: sqlite3.Connection, key_id: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT * FROM kms_keys WHERE id=?", (key_id,)).fetchone()
    assert row is not None
    return row


def aws_ebs_key(ebs: Ebs) -> KmsKey:
    """The region's AWS managed key for EBS, made on first use as AWS does ("created
    automatically when you first create an encrypted resource")."""
    with ebs.store.transaction() as db:
        purge_deleted(db)
        ensure_predefined_aliases(db)
        return _key_of(ebs, _row(db, _aws_ebs_key_id(ebs, db)))


def _aws_ebs_key_id(ebs: Ebs, db: sqlite3.Connection) -> str:
    row = db.execute("SELECT key_id FROM kms_aliases WHERE name=?", (AWS_EBS_ALIAS,)).fetchone()
    if row is not None and row["key_id"] is not None:
        return str(row["key_id"])
    # Stable per account and region, so a data dir's records keep naming the same key.
    key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, alias_arn(ebs, AWS_EBS_ALIAS)))
    request = KeyRequest(description=AWS_EBS_DESCRIPTION)
    _insert_key(db, key_id, request, SYMMETRIC, "ENCRYPT_DECRYPT", AWS)
    now = to_text(utcnow())
    db.execute(
        "INSERT INTO kms_aliases(name, key_id, creation_date, last_updated) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET key_id=excluded.key_id, "
        "last_updated=excluded.last_updated",
        (AWS_EBS_ALIAS, key_id, now, now),
    )
    return key_id


# The ARN fakestor gave every encrypted resource before it served KMS (key id below),
# and the records that may hold it.
_LEGACY_DEFAULT_KEY_ID = "fakestor-aws-ebs-default-key"
_KEY_COLUMNS = (
    ("volumes", "kms_key_id"),
    ("snapshots", "kms_key_id"),
    ("direct_snapshots", "kms_key_arn"),
)


def adopt_legacy_default_key(ebs: Ebs) -> None:
    """Point the records of a data dir from before KMS at the AWS managed key: they name
    a key that never existed, which EBS would now refuse."""
    legacy = key_arn(ebs, _LEGACY_DEFAULT_KEY_ID)
    with ebs.store.transaction() as db:
        used = [
            (table, column)
            for table, column in _KEY_COLUMNS
            if db.execute(f"SELECT 1 FROM {table} WHERE {column}=? LIMIT 1", (legacy,)).fetchone()
        ]
        if not used:
            return
        ensure_predefined_aliases(db)
        arn = key_arn(ebs, _aws_ebs_key_id(ebs, db))
        for table, column in used:
            db.execute(f"UPDATE {table} SET {column}=? WHERE {column}=?", (arn, legacy))


def find_key(ebs: Ebs, db: sqlite3.Connection, given: str, *, aliases: bool = True) -> KmsKey:
    """The key `given` names: key id, key ARN, and (if `aliases`) alias name or alias ARN.

    Wording: "Key '...' does not exist" is KMS's (boto/botocore#2107); the other
    NotFoundException and InvalidArnException texts are fakestor's choice.
    """
    purge_deleted(db)
    ensure_predefined_aliases(db)
    name = given
    arn = _ARN.fullmatch(given)
    if given.startswith("arn:"):
        if arn is None:
            raise kms_errors.InvalidArnException(f"{given} is not a valid KMS key or alias ARN.")
        region, account, kind, rest = arn.groups()
        if region != ebs.region.name or account != ebs.account_id:
            raise kms_errors.NotFoundException(f"Invalid arn {region}")
        name = rest if kind == "key" else f"alias/{rest}"
        if kind == "alias" and not aliases:
            raise kms_errors.InvalidArnException(f"{given} is an alias ARN, not a key ARN.")
    if name.startswith("alias/"):
        if not aliases:
            raise kms_errors.NotFoundException(f"Invalid keyId {given}")
        row = db.execute("SELECT key_id FROM kms_aliases WHERE name=?", (name,)).fetchone()
        if row is None:
            raise kms_errors.NotFoundException(f"Alias {alias_arn(ebs, name)} is not found.")
        if row["key_id"] is None and name == AWS_EBS_ALIAS:
            # AWS services use DescribeKey to create AWS managed keys from a predefined
            # alias (DescribeKey's documentation); so does fakestor.
            return _key_of(ebs, _row(db, _aws_ebs_key_id(ebs, db)))
        name = str(row["key_id"])
    if not _KEY_ID.fullmatch(name):
        raise kms_errors.NotFoundException(f"Invalid keyId {given}")
    row = db.execute("SELECT * FROM kms_keys WHERE id=?", (name,)).fetchone()
    if row is None:
        raise kms_errors.NotFoundException(f"Key '{key_arn(ebs, name)}' does not exist")
    return _key_of(ebs, row)


def describe_key(ebs: Ebs, given: str) -> KmsKey:
    with ebs.store.transaction() as db:
        return find_key(ebs, db, given)


def list_keys(ebs: Ebs) -> list[KmsKey]:
    with ebs.store.transaction() as db:
        purge_deleted(db)
        rows = db.execute("SELECT * FROM kms_keys ORDER BY id").fetchall()
        return [_key_of(ebs, row) for row in rows]


def _customer_key(ebs: Ebs, db: sqlite3.Connection, given: str, action: str) -> KmsKey:
    """A key that is the caller's to change; the key policy of an AWS managed key lets
    no one change it (the AccessDeniedException wording is fakestor's)."""
    key = find_key(ebs, db, given, aliases=False)
    if key.key_manager == AWS:
        raise kms_errors.AccessDeniedException(
            f"{key.arn} is an AWS managed key: its key policy does not allow kms:{action}."
        )
    return key


def _invalid_state(key: KmsKey) -> kms_errors.KMSInvalidStateException:
    return kms_errors.KMSInvalidStateException(f"{key.arn} is {key.state}")


def set_enabled(ebs: Ebs, given: str, enabled: bool) -> None:
    """EnableKey / DisableKey; both refuse a key pending deletion."""
    with ebs.store.transaction() as db:
        key = _customer_key(ebs, db, given, "EnableKey" if enabled else "DisableKey")
        if key.state == PENDING_DELETION:
            raise _invalid_state(key)
        state = ENABLED if enabled else DISABLED
        db.execute("UPDATE kms_keys SET state=? WHERE id=?", (state, key.id))


def schedule_key_deletion(ebs: Ebs, given: str, window_days: int | None) -> KmsKey:
    days = DEFAULT_WINDOW_DAYS if window_days is None else window_days
    if days < MIN_WINDOW_DAYS or days > MAX_WINDOW_DAYS:
        bound = (
            f"greater than or equal to {MIN_WINDOW_DAYS}"
            if days < MIN_WINDOW_DAYS
            else f"less than or equal to {MAX_WINDOW_DAYS}"
        )
        # The Coral validation wording AWS's JSON services answer with.
        raise kms_errors.ValidationException(
            f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed "
            f"to satisfy constraint: Member must have value {bound}"
        )
    with ebs.store.transaction() as db:
        key = _customer_key(ebs, db, given, "ScheduleKeyDeletion")
        if key.state == PENDING_DELETION:
            raise _invalid_state(key)
        deletion = due_after(timedelta(days=days), ebs.time_scale)
        db.execute(
            "UPDATE kms_keys SET state=?, deletion_date=?, pending_window_days=? WHERE id=?",
            (PENDING_DELETION, to_text(deletion), days, key.id),
        )
        return _key_of(ebs, _row(db, key.id))


def cancel_key_deletion(ebs: Ebs, given: str) -> KmsKey:
    """Back from PendingDeletion to Disabled, as KMS leaves it."""
    with ebs.store.transaction() as db:
        key = _customer_key(ebs, db, given, "CancelKeyDeletion")
        if key.state != PENDING_DELETION:
            raise _invalid_state(key)
        db.execute(
            "UPDATE kms_keys SET state=?, deletion_date=NULL, pending_window_days=NULL WHERE id=?",
            (DISABLED, key.id),
        )
        return _key_of(ebs, _row(db, key.id))


# ---- EBS's view of keys ------------------------------------------------------


def ebs_key_reference(ebs: Ebs, given: str) -> str:
    """What EBS records for a KmsKeyId it is given (key id, key ARN, alias name or alias
    ARN): the key's ARN if the key exists, else the text as given. EC2 checks the key
    asynchronously (see `unusable_for_ebs`), so no form is refused here."""
    with ebs.store.transaction() as db:
        try:
            return find_key(ebs, db, given).arn
        except kms_errors.KmsError:
            return given


def unusable_for_ebs(ebs: Ebs, reference: str) -> str | None:
    """Why EBS cannot encrypt with the key `reference` names (None if it can): unknown,
    not Enabled, or not a symmetric encryption key ("Amazon EBS does not support
    asymmetric KMS keys")."""
    with ebs.store.transaction() as db:
        try:
            key = find_key(ebs, db, reference)
        except kms_errors.KmsError as refused:
            return refused.message
    if key.state != ENABLED:
        return f"{key.arn} is {key.state}"
    if key.key_spec != SYMMETRIC:
        return f"{key.arn} is not a symmetric encryption key"
    return None
