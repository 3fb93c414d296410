"""Recycle Bin retention rules (the `rbin` API): create, get, list, update, delete, lock and
unlock them, tag them, and find the rule that retains a deleted resource.

A rule's lock state follows from its recorded times: `pending_unlock` turns `unlocked` when
its unlock delay (EC2 days divided by the time scale) has passed, so no task moves it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import sqlite3
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fakestor.control.context import Ebs
from fakestor.control.lifecycle_clock import scaled
from fakestor.control.resources import from_text, to_text, utcnow
from fakestor.rbin_errors import (
    ConflictException,
    RbinValidationException,
    RuleNotFoundException,
    ServiceQuotaExceededException,
)

# Retention periods per resource type, in days (RetentionPeriodValue in AWS's API reference).
RETENTION_DAYS = {"EBS_SNAPSHOT": (1, 365), "EC2_IMAGE": (1, 365), "EBS_VOLUME": (1, 7)}
UNLOCK_DELAY_DAYS = (7, 30)
# Rules one tag pair may appear in (CreateRule's ResourceTags documentation: "a maximum of
# five retention rules"), and rules per Region: 250 is chosen, as the quota page was not
# found to confirm it.
MAX_RULES_PER_REGION = 250
MAX_RULES_PER_TAG = 5
MAX_RULE_TAGS = 50  # tags on a rule itself, as for other AWS resources

LOCKED, PENDING_UNLOCK, UNLOCKED = "locked", "pending_unlock", "unlocked"
# The first rule of an account can take up to 30 minutes to become active on AWS; here a
# rule retains resources at once, so every rule is `available` (the model also has `pending`).
AVAILABLE = "available"

# A resource tag of a rule: key and value (None: the value was not given).
ResourceTag = tuple[str, str | None]


@dataclass(frozen=True)
class Rule:
    identifier: str
    arn: str
    resource_type: str
    retention_days: int
    description: str
    resource_tags: list[ResourceTag]
    exclude_tags: list[ResourceTag]
    lock_delay_days: int | None
    lock_state: str | None
    lock_end_time: datetime | None
    tags: dict[str, str] = field(default_factory=dict)
    status: str = AVAILABLE

    @property
    def holds(self) -> bool:
        """Whether the rule may not be updated or deleted now."""
        return self.lock_state in (LOCKED, PENDING_UNLOCK)


@dataclass(frozen=True)
class RuleChanges:
    """UpdateRule's optional fields; None leaves one as it is."""

    retention_days: int | None = None
    description: str | None = None
    resource_type: str | None = None
    resource_tags: Sequence[ResourceTag] | None = None
    exclude_tags: Sequence[ResourceTag] | None = None


def _arn(ebs: Ebs, identifier: str) -> str:
    return f"arn:aws:rbin:{ebs.region.name}:{ebs.account_id}:rule/{identifier}"


def _tags_from(text: str) -> list[ResourceTag]:
    return [(key, value) for key, value in json.loads(text)]


def _of_row(ebs: Ebs, row: sqlite3.Row) -> Rule:
    lock_state, lock_end = row["lock_state"], row["lock_end_time"]
    end = from_text(lock_end) if lock_end else None
    if lock_state == PENDING_UNLOCK and end is not None and utcnow() >= end:
        lock_state, end = UNLOCKED, None
    return Rule(
        identifier=row["id"],
        arn=_arn(ebs, row["id"]),
        resource_type=row["resource_type"],
        retention_days=row["retention_days"],
        description=row["description"],
        resource_tags=_tags_from(row["resource_tags"]),
        exclude_tags=_tags_from(row["exclude_tags"]),
        lock_delay_days=row["lock_delay_days"],
        lock_state=lock_state,
        lock_end_time=end,
        tags=dict(json.loads(row["tags"])),
    )


def _load(ebs: Ebs, db: sqlite3.Connection) -> list[Rule]:
    rows = db.execute("SELECT * FROM rbin_rules ORDER BY create_time, id").fetchall()
    return [_of_row(ebs, row) for row in rows]


def _get(ebs: Ebs, db: sqlite3.Connection, identifier: str) -> Rule:
    row = db.execute("SELECT * FROM rbin_rules WHERE id=?", (identifier,)).fetchone()
    if row is None:
        raise RuleNotFoundException(identifier)
    return _of_row(ebs, row)


def _check_retention(resource_type: str, days: int) -> None:
    low, high = RETENTION_DAYS[resource_type]
    if not low <= days <= high:
        raise RbinValidationException(
            f"RetentionPeriodValue {days} is invalid for {resource_type}: it must be "
            f"between {low} and {high} days."
        )


def _check_unlock_delay(days: int) -> None:
    low, high = UNLOCK_DELAY_DAYS
    if not low <= days <= high:
        raise RbinValidationException(
            f"UnlockDelayValue {days} is invalid: it must be between {low} and {high} days."
        )


def _check_shape(resource_tags: Sequence[ResourceTag], exclude_tags: Sequence[ResourceTag]) -> None:
    if resource_tags and exclude_tags:
        raise RbinValidationException(
            "ExcludeResourceTags can be specified only for Region-level retention rules "
            "(rules without ResourceTags)."
        )


def _check_lockable(rule_tags: Sequence[ResourceTag], exclude_tags: Sequence[ResourceTag]) -> None:
    if rule_tags or exclude_tags:
        raise RbinValidationException(
            "Only Region-level retention rules without exclusion tags can be locked."
        )


def _check_tag_quota(
    ebs: Ebs, db: sqlite3.Connection, resource_tags: Sequence[ResourceTag], skip: str = ""
) -> None:
    if not resource_tags:
        return
    others = [rule for rule in _load(ebs, db) if rule.identifier != skip]
    for pair in resource_tags:
        if sum(pair in rule.resource_tags for rule in others) >= MAX_RULES_PER_TAG:
            raise ServiceQuotaExceededException(
                f"The resource tag {pair[0]}={pair[1] or ''} is already used by "
                f"{MAX_RULES_PER_TAG} retention rules, the most one tag can be used in."
            )


def _new_identifier() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(11))


def create_rule(
    ebs: Ebs,
    resource_type: str,
    retention_days: int,
    *,
    description: str = "",
    resource_tags: Sequence[ResourceTag] = (),
    exclude_tags: Sequence[ResourceTag] = (),
    lock_delay_days: int | None = None,
    tags: Mapping[str, str] | None = None,
) -> Rule:
    _check_retention(resource_type, retention_days)
    _check_shape(resource_tags, exclude_tags)
    if lock_delay_days is not None:
        _check_lockable(resource_tags, exclude_tags)
        _check_unlock_delay(lock_delay_days)
    _check_rule_tags(tags or {})
    with ebs.store.transaction() as db:
        count = db.execute("SELECT COUNT(*) FROM rbin_rules").fetchone()[0]
        if count >= MAX_RULES_PER_REGION:
            raise ServiceQuotaExceededException(
                f"This Region has {count} retention rules, the most it may have."
            )
        _check_tag_quota(ebs, db, resource_tags)
        identifier = _new_identifier()
        db.execute(
            "INSERT INTO rbin_rules(id, resource_type, retention_days, description, "
            "resource_tags, exclude_tags, lock_delay_days, lock_state, lock_end_time, tags, "
            "create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            (
                identifier,
                resource_type,
                retention_days,
                description,
                json.dumps(list(resource_tags)),
                json.dumps(list(exclude_tags)),
                lock_delay_days,
                None if lock_delay_days is None else LOCKED,
                json.dumps(dict(tags or {})),
                to_text(utcnow()),
            ),
        )
        return _get(ebs, db, identifier)


def get_rule(ebs: Ebs, identifier: str) -> Rule:
    with ebs.store.transaction() as db:
        return _get(ebs, db, identifier)


@dataclass(frozen=True)
class RulePage:
    rules: list[Rule]
    next_token: str | None


def list_rules(
    ebs: Ebs,
    resource_type: str,
    *,
    resource_tags: Sequence[ResourceTag] = (),
    exclude_tags: Sequence[ResourceTag] = (),
    lock_state: str | None = None,
    max_results: int | None = None,
    next_token: str | None = None,
) -> RulePage:
    """The rules retaining `resource_type` that have every tag and exclusion tag given,
    ordered by identifier and paged."""
    after = _decode_token(next_token) if next_token else ""
    with ebs.store.transaction() as db:
        rules = _load(ebs, db)
    found = sorted(
        (
            rule
            for rule in rules
            if rule.resource_type == resource_type
            and all(pair in rule.resource_tags for pair in resource_tags)
            and all(pair in rule.exclude_tags for pair in exclude_tags)
            and (lock_state is None or rule.lock_state == lock_state)
            and rule.identifier > after
        ),
        key=lambda rule: rule.identifier,
    )
    if max_results is None or len(found) <= max_results:
        return RulePage(found, None)
    page = found[:max_results]
    return RulePage(page, base64.b64encode(page[-1].identifier.encode()).decode())


def _decode_token(token: str) -> str:
    try:
        last = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        last = ""
    if not re.fullmatch(r"[0-9a-zA-Z]{11}", last):
        raise RbinValidationException(
            f"The pagination token {token[:80]} is invalid.", "INVALID_PAGE_TOKEN"
        )
    return last


def _check_unheld(rule: Rule, doing: str) -> None:
    if rule.holds:
        raise ConflictException(
            f"Rule {rule.identifier} is {rule.lock_state} and can't be {doing}; unlock it "
            "and wait for its unlock delay period to expire."
        )


def update_rule(ebs: Ebs, identifier: str, changes: RuleChanges) -> Rule:
    with ebs.store.transaction() as db:
        rule = _get(ebs, db, identifier)
        _check_unheld(rule, "updated")
        if changes.resource_type is not None and changes.resource_type != rule.resource_type:
            raise RbinValidationException(
                "A retention rule's ResourceType can't be changed after it is created."
            )
        days = rule.retention_days if changes.retention_days is None else changes.retention_days
        _check_retention(rule.resource_type, days)
        resource_tags = list(
            rule.resource_tags if changes.resource_tags is None else changes.resource_tags
        )
        exclude_tags = list(
            rule.exclude_tags if changes.exclude_tags is None else changes.exclude_tags
        )
        _check_shape(resource_tags, exclude_tags)
        _check_tag_quota(ebs, db, resource_tags, skip=identifier)
        description = rule.description if changes.description is None else changes.description
        db.execute(
            "UPDATE rbin_rules SET retention_days=?, description=?, resource_tags=?, "
            "exclude_tags=? WHERE id=?",
            (days, description, json.dumps(resource_tags), json.dumps(exclude_tags), identifier),
        )
        return _get(ebs, db, identifier)


def delete_rule(ebs: Ebs, identifier: str) -> None:
    """Delete a rule; what it retains stays in the bin until its own exit time."""
    with ebs.store.transaction() as db:
        _check_unheld(_get(ebs, db, identifier), "deleted")
        db.execute("DELETE FROM rbin_rules WHERE id=?", (identifier,))


def lock_rule(ebs: Ebs, identifier: str, unlock_delay_days: int) -> Rule:
    """Lock a Region-level rule; relocking one that is pending unlock ends its delay."""
    _check_unlock_delay(unlock_delay_days)
    with ebs.store.transaction() as db:
        rule = _get(ebs, db, identifier)
        _check_lockable(rule.resource_tags, rule.exclude_tags)
        if rule.lock_state == LOCKED:
            raise ConflictException(f"Rule {identifier} is already locked.")
        if rule.lock_delay_days is not None and rule.lock_delay_days != unlock_delay_days:
            raise RbinValidationException(
                f"Rule {identifier} was locked with an unlock delay of {rule.lock_delay_days} "
                "days; the unlock delay can't be changed after the first lock."
            )
        db.execute(
            "UPDATE rbin_rules SET lock_delay_days=?, lock_state=?, lock_end_time=NULL WHERE id=?",
            (unlock_delay_days, LOCKED, identifier),
        )
        return _get(ebs, db, identifier)


def unlock_rule(ebs: Ebs, identifier: str) -> Rule:
    """Start a locked rule's unlock delay: `pending_unlock` until it ends, then `unlocked`."""
    with ebs.store.transaction() as db:
        rule = _get(ebs, db, identifier)
        if rule.lock_state != LOCKED or rule.lock_delay_days is None:
            raise ConflictException(
                f"Rule {identifier} is not locked (lock state {rule.lock_state or 'none'})."
            )
        end = utcnow() + scaled(timedelta(days=rule.lock_delay_days), ebs.time_scale)
        db.execute(
            "UPDATE rbin_rules SET lock_state=?, lock_end_time=? WHERE id=?",
            (PENDING_UNLOCK, to_text(end), identifier),
        )
        return _get(ebs, db, identifier)


def _check_rule_tags(tags: Mapping[str, str]) -> None:
    for key in tags:
        if key.lower().startswith("aws:"):
            raise RbinValidationException(f"Tag key {key} is reserved for AWS use.")


def _rule_of_arn(ebs: Ebs, db: sqlite3.Connection, arn: str) -> Rule:
    match = re.fullmatch(r"arn:[^:]+:rbin:([a-z0-9-]*):([0-9]{12}):rule/([0-9a-zA-Z]{11})", arn)
    if match is None:
        raise RbinValidationException(f"The resource ARN {arn[:200]} is not a rule's ARN.")
    region, account, identifier = match.groups()
    if region != ebs.region.name or account != ebs.account_id:
        raise RuleNotFoundException(identifier)
    return _get(ebs, db, identifier)


def tag_resource(ebs: Ebs, arn: str, tags: Mapping[str, str]) -> None:
    _check_rule_tags(tags)
    with ebs.store.transaction() as db:
        rule = _rule_of_arn(ebs, db, arn)
        merged = {**rule.tags, **tags}
        if len(merged) > MAX_RULE_TAGS:
            raise ServiceQuotaExceededException(
                f"A retention rule can have at most {MAX_RULE_TAGS} tags."
            )
        db.execute("UPDATE rbin_rules SET tags=? WHERE id=?", (json.dumps(merged), rule.identifier))


def untag_resource(ebs: Ebs, arn: str, keys: Sequence[str]) -> None:
    with ebs.store.transaction() as db:
        rule = _rule_of_arn(ebs, db, arn)
        kept = {k: v for k, v in rule.tags.items() if k not in keys}
        db.execute("UPDATE rbin_rules SET tags=? WHERE id=?", (json.dumps(kept), rule.identifier))


def list_tags(ebs: Ebs, arn: str) -> dict[str, str]:
    with ebs.store.transaction() as db:
        return _rule_of_arn(ebs, db, arn).tags


def _has(tags: Mapping[str, str], pair: ResourceTag) -> bool:
    # A pair given without a value matches the key with any value; AWS documents none.
    key, value = pair
    return key in tags and (value is None or tags[key] == value)


def retaining_rule(
    ebs: Ebs, db: sqlite3.Connection, resource_type: str, tags: Mapping[str, str]
) -> Rule | None:
    """The rule that retains a deleted resource with `tags`: of the available rules for its
    type that match it, the one with the longest retention period (as AWS chooses)."""
    matching = [
        rule
        for rule in _load(ebs, db)
        if rule.resource_type == resource_type
        and rule.status == AVAILABLE
        and (
            any(_has(tags, pair) for pair in rule.resource_tags)
            if rule.resource_tags
            else not any(_has(tags, pair) for pair in rule.exclude_tags)
        )
    ]
    return max(matching, key=lambda rule: rule.retention_days, default=None)
