"""KMS aliases and key tags of a region: CreateAlias, UpdateAlias, DeleteAlias, ListAliases,
TagResource, UntagResource and ListResourceTags."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from fakestor import kms_errors
from fakestor.control.context import Ebs
from fakestor.control.kms_keys import (
    AWS,
    PENDING_DELETION,
    KmsKey,
    alias_arn,
    check_tags,
    ensure_predefined_aliases,
    find_key,
    purge_deleted,
)
from fakestor.control.resources import from_text, to_text, utcnow

MAX_TAGS_PER_KEY = 50


@dataclass
class Alias:
    name: str
    arn: str
    key_id: str | None
    creation_date: datetime | None
    last_updated: datetime | None


def _check_alias_name(name: str) -> None:
    # The wording of both refusals is fakestor's; the rules are CreateAlias's documentation.
    if not name.startswith("alias/") or name == "alias/":
        raise kms_errors.ValidationException(
            f'Alias {name} must start with the prefix "alias/" and name something after it.'
        )
    if name.startswith("alias/aws/"):
        raise kms_errors.InvalidAliasNameException(
            f"Alias {name}: the prefix alias/aws/ is reserved for AWS managed keys."
        )


def _target(ebs: Ebs, db: sqlite3.Connection, target: str) -> KmsKey:
    """An alias's key: named by key id or key ARN, customer managed, not pending deletion."""
    key = find_key(ebs, db, target, aliases=False)
    if key.key_manager == AWS:
        raise kms_errors.AccessDeniedException(
            f"{key.arn} is an AWS managed key: aliases can name customer managed keys only."
        )
    if key.state == PENDING_DELETION:
        raise kms_errors.KMSInvalidStateException(f"{key.arn} is pending deletion.")
    return key


def create_alias(ebs: Ebs, name: str, target: str) -> None:
    _check_alias_name(name)
    with ebs.store.transaction() as db:
        key = _target(ebs, db, target)
        if db.execute("SELECT 1 FROM kms_aliases WHERE name=?", (name,)).fetchone():
            raise kms_errors.AlreadyExistsException(
                f"An alias with the name {alias_arn(ebs, name)} already exists"
            )
        now = to_text(utcnow())
        db.execute(
            "INSERT INTO kms_aliases(name, key_id, creation_date, last_updated) "
            "VALUES (?, ?, ?, ?)",
            (name, key.id, now, now),
        )


def update_alias(ebs: Ebs, name: str, target: str) -> None:
    _check_alias_name(name)
    with ebs.store.transaction() as db:
        _existing(ebs, db, name)
        key = _target(ebs, db, target)
        db.execute(
            "UPDATE kms_aliases SET key_id=?, last_updated=? WHERE name=?",
            (key.id, to_text(utcnow()), name),
        )


def delete_alias(ebs: Ebs, name: str) -> None:
    _check_alias_name(name)
    with ebs.store.transaction() as db:
        _existing(ebs, db, name)
        db.execute("DELETE FROM kms_aliases WHERE name=?", (name,))


def _existing(ebs: Ebs, db: sqlite3.Connection, name: str) -> None:
    purge_deleted(db)
    if db.execute("SELECT 1 FROM kms_aliases WHERE name=?", (name,)).fetchone() is None:
        raise kms_errors.NotFoundException(f"Alias {alias_arn(ebs, name)} is not found.")


def list_aliases(ebs: Ebs, key_id: str | None = None) -> list[Alias]:
    """Every alias of the region, by name; with `key_id` (key id or key ARN), its key's."""
    with ebs.store.transaction() as db:
        purge_deleted(db)
        ensure_predefined_aliases(db)
        if key_id is not None:
            key = find_key(ebs, db, key_id, aliases=False)
            rows = db.execute(
                "SELECT * FROM kms_aliases WHERE key_id=? ORDER BY name", (key.id,)
            ).fetchall()
        else:
            rows = db.execute("SELECT * FROM kms_aliases ORDER BY name").fetchall()
    aliases = []
    for row in rows:
        made = row["key_id"] is not None  # a predefined alias lists its name only
        aliases.append(
            Alias(
                name=row["name"],
                arn=alias_arn(ebs, row["name"]),
                key_id=row["key_id"],
                creation_date=from_text(row["creation_date"]) if made else None,
                last_updated=from_text(row["last_updated"]) if made else None,
            )
        )
    return aliases


def tag_resource(ebs: Ebs, given: str, tags: tuple[tuple[str, str], ...]) -> None:
    check_tags(tags)
    with ebs.store.transaction() as db:
        key = _taggable(ebs, db, given)
        db.executemany(
            "INSERT OR REPLACE INTO kms_key_tags VALUES (?, ?, ?)",
            [(key.id, k, v) for k, v in tags],
        )
        count = db.execute(
            "SELECT COUNT(*) FROM kms_key_tags WHERE key_id=?", (key.id,)
        ).fetchone()[0]
        if count > MAX_TAGS_PER_KEY:
            raise kms_errors.LimitExceededException(
                f"A KMS key takes at most {MAX_TAGS_PER_KEY} tags."
            )


def untag_resource(ebs: Ebs, given: str, tag_keys: list[str]) -> None:
    with ebs.store.transaction() as db:
        key = _taggable(ebs, db, given)
        db.executemany(
            "DELETE FROM kms_key_tags WHERE key_id=? AND tag_key=?",
            [(key.id, k) for k in tag_keys],
        )


def _taggable(ebs: Ebs, db: sqlite3.Connection, given: str) -> KmsKey:
    key = find_key(ebs, db, given, aliases=False)
    if key.key_manager == AWS:
        raise kms_errors.AccessDeniedException(
            f"{key.arn} is an AWS managed key: its tags cannot be changed."
        )
    if key.state == PENDING_DELETION:
        raise kms_errors.KMSInvalidStateException(f"{key.arn} is pending deletion.")
    return key


def list_resource_tags(ebs: Ebs, given: str) -> list[tuple[str, str]]:
    with ebs.store.transaction() as db:
        key = find_key(ebs, db, given, aliases=False)
        rows = db.execute(
            "SELECT tag_key, tag_value FROM kms_key_tags WHERE key_id=? ORDER BY tag_key",
            (key.id,),
        ).fetchall()
    return [(row["tag_key"], row["tag_value"]) for row in rows]
