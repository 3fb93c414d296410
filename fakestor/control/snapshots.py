"""Snapshots: create (one volume or all of an instance's), copy, describe, delete, permissions,
and the tasks that capture and copy their data; a deleted snapshot goes to the Recycle Bin if
a rule retains it (recycle_bin.py), else its record and data go (snapshot_trash.py)."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from backends import BackendError
from fakestor import errors, ids
from fakestor.control import faults, kms_keys
from fakestor.control.account import default_encryption_key, resolve_encryption
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filter_values import (
    SNAPSHOT_FILTERS,
    snapshot_filter_values,
)
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.loaders import (
    get_instance,
    get_snapshot,
    get_volume,
    load_snapshots,
    load_volumes,
)
from fakestor.control.recycle_bin import retain_or_remove, submit_disposal
from fakestor.control.requests import InstanceSnapshotsRequest, SnapshotCopyRequest, TagSpec
from fakestor.control.resources import (
    Snapshot,
    Volume,
    to_text,
    utcnow,
)
from fakestor.control.snapshot_locks import check_unlocked
from fakestor.control.snapshot_tiers import check_in_standard_tier
from fakestor.control.states import (
    USABLE_VOLUME,
    SnapshotState,
    VolumeState,
)
from fakestor.control.tags import set_tags, tags_for
from fakestor.control.tasks import RetryLater

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds between recorded snapshot progress updates


def create_snapshot(
    ebs: Ebs,
    volume_id: str,
    *,
    description: str = "",
    tag_specs: Sequence[TagSpec] = (),
    dry_run: bool = False,
) -> Snapshot:
    tags = tags_for(tag_specs, "snapshot")
    with ebs.store.transaction() as db:
        volume = get_volume(db, volume_id)
        check_snapshottable(volume)
        check_dry_run(dry_run)
        snapshot = insert_snapshot(ebs, db, _of_volume(volume, description), tags)
    submit_create_snapshot(ebs, snapshot.id, volume_id)
    return snapshot


def check_snapshottable(volume: Volume) -> None:
    if volume.state not in USABLE_VOLUME:
        raise errors.IncorrectState(
            f"Volume '{volume.id}' is in the '{volume.state}' state; snapshot an "
            f"'{VolumeState.AVAILABLE}' or '{VolumeState.IN_USE}' volume."
        )


@dataclass(frozen=True)
class NewSnapshot:
    """What a new snapshot's record starts with."""

    volume_id: str
    volume_size: int
    description: str
    encrypted: bool
    kms_key_id: str | None
    source_snapshot_id: str | None = None


def _of_volume(volume: Volume, description: str) -> NewSnapshot:
    return NewSnapshot(volume.id, volume.size, description, volume.encrypted, volume.kms_key_id)


def insert_snapshot(
    ebs: Ebs, db: sqlite3.Connection, new: NewSnapshot, tags: Mapping[str, str]
) -> Snapshot:
    """Record a snapshot `pending`; the caller submits the task that captures its data."""
    snapshot_id = ids.new_id(ids.SNAPSHOT)
    db.execute(
        "INSERT INTO snapshots(id, volume_id, volume_size, state, progress, start_time, "
        "description, encrypted, kms_key_id, source_snapshot_id, fault) "
        "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
        (
            snapshot_id,
            new.volume_id,
            new.volume_size,
            SnapshotState.PENDING,
            to_text(utcnow()),
            new.description,
            int(new.encrypted),
            new.kms_key_id,
            new.source_snapshot_id,
            None if new.source_snapshot_id else faults.snapshot_fault_at_start(db, new.volume_id),
        ),
    )
    set_tags(db, snapshot_id, "snapshot", tags)
    return get_snapshot(db, ebs.account_id, snapshot_id)


def progress_recorder(ebs: Ebs, snapshot_id: str) -> Callable[[int], None]:
    last_time = 0.0

    def record(percent: int) -> None:
        # At most a few commits a second: each is an fsync of the state store.
        nonlocal last_time
        now = time.monotonic()
        if now - last_time < PROGRESS_INTERVAL:
            return
        last_time = now
        percent = max(0, min(99, percent))
        try:
            with ebs.store.transaction() as db:
                db.execute(
                    "UPDATE snapshots SET progress=? WHERE id=? AND "
                    f"state='{SnapshotState.PENDING}'",
                    (percent, snapshot_id),
                )
        except sqlite3.OperationalError as failure:
            # Progress is informational; a full disk must not fail the copy itself.
            log.warning("cannot record progress of %s: %s", snapshot_id, failure)

    return record


def finish_snapshot(ebs: Ebs, snapshot_id: str, failure: Exception | None) -> None:
    with ebs.store.transaction() as db:
        row = db.execute(
            "SELECT delete_requested FROM snapshots WHERE id=?", (snapshot_id,)
        ).fetchone()
        retained = False
        if failure is None and row is not None:
            db.execute(
                f"UPDATE snapshots SET state='{SnapshotState.COMPLETED}', progress=100, "
                "completion_time=? "
                "WHERE id=?",
                (to_text(utcnow()), snapshot_id),
            )
        else:
            db.execute(
                f"UPDATE snapshots SET state='{SnapshotState.ERROR}', state_message=? WHERE id=?",
                (str(failure), snapshot_id),
            )
        if row is not None and row["delete_requested"]:
            retained = retain_or_remove(ebs, db, snapshot_id)
    if row is not None and row["delete_requested"]:
        submit_disposal(ebs, snapshot_id, retained)


def submit_snapshot_data(
    ebs: Ebs,
    snapshot_id: str,
    keys: Sequence[str],
    capture: Callable[[Callable[[int], None]], None],
    what: str,
) -> None:
    """Run the backend's copy for `snapshot_id`, then record completed or error."""

    def work() -> None:
        try:
            capture(progress_recorder(ebs, snapshot_id))
        except BackendError as failure:
            finish_snapshot(ebs, snapshot_id, failure)
        else:
            finish_snapshot(ebs, snapshot_id, None)

    ebs.tasks.submit(
        keys, work, what, on_failure=lambda failure: finish_snapshot(ebs, snapshot_id, failure)
    )


def submit_create_snapshot(ebs: Ebs, snapshot_id: str, volume_id: str) -> None:
    captured = False  # by an earlier run of this task, held by a fault since

    def capture(progress: Callable[[int], None]) -> None:
        nonlocal captured
        hold = faults.snapshot_hold(ebs, snapshot_id, volume_id)
        if hold == "error":
            raise BackendError(f"fault {faults.PREFIX}{faults.SNAPSHOT}=error on {volume_id}")
        if not captured:
            # The data is of the moment the snapshot started, held or not.
            stop = hold if isinstance(hold, int) else 100
            ebs.backend.create_snapshot(snapshot_id, volume_id, lambda p: progress(min(p, stop)))
            captured = True
        if hold is not None:  # stuck: pending at the percent while the volume's tag says so
            faults.hold_snapshot_at(ebs, snapshot_id, int(hold))
            raise RetryLater(faults.POLL_SECONDS)

    submit_snapshot_data(
        ebs, snapshot_id, [volume_id, snapshot_id], capture, f"snapshot {volume_id}"
    )


def create_snapshots(
    ebs: Ebs, request: InstanceSnapshotsRequest, *, dry_run: bool = False
) -> list[Snapshot]:
    excluded = request.exclude_volume_ids
    with ebs.store.transaction() as db:
        instance = get_instance(db, request.instance_id)
        for volume_id in excluded:
            get_volume(db, volume_id)
        volumes = {v.id: v for v in load_volumes(db, [a.volume_id for a in instance.attachments])}
        for volume in volumes.values():
            if volume.id not in excluded:
                check_snapshottable(volume)
        requested = tags_for(request.tag_specs, "snapshot")
        check_dry_run(dry_run)
        snapshots = []
        # fakestor instances have no boot volume, so ExcludeBootVolume changes nothing.
        for attachment in instance.attachments:
            if attachment.volume_id in excluded:
                continue
            volume = volumes[attachment.volume_id]
            tags = {**(volume.tags if request.copy_tags_from_volume else {}), **requested}
            new = _of_volume(volume, request.description)
            snapshots.append(insert_snapshot(ebs, db, new, tags))
    # Only once every snapshot is recorded: a refused request starts no work.
    for snapshot in snapshots:
        submit_create_snapshot(ebs, snapshot.id, snapshot.volume_id)
    return snapshots


def copy_snapshot(ebs: Ebs, request: SnapshotCopyRequest, *, dry_run: bool = False) -> Snapshot:
    """Copy a completed snapshot of `request.source_region` (this region or another) into
    this region; the copy is `pending` until the backend has copied its data."""
    tags = tags_for(request.tag_specs, "snapshot")
    source_ebs = _source_region(ebs, request.source_region)
    with source_ebs.store.transaction() as db:
        source = get_snapshot(db, ebs.account_id, request.source_snapshot_id)
        check_in_standard_tier(db, source.id)
    if source.state != SnapshotState.COMPLETED:
        raise errors.IncorrectState(f"Snapshot '{source.id}' is in invalid state - {source.state}")
    kms_key_id = request.kms_key_id
    if source_ebs is not ebs and source.encrypted and kms_key_id is None:
        # A KMS key is regional: an encrypted copy in another region takes this one's.
        kms_key_id = default_encryption_key(ebs)
    with ebs.store.transaction() as db:
        encrypted, kms_key_id = resolve_encryption(
            ebs, request.encrypted, kms_key_id, source, "its copy"
        )
        check_dry_run(dry_run)
        description = request.description
        if description is None:
            description = f"[Copied {source.id} from {request.source_region}] {source.description}"
        new = NewSnapshot(
            source.volume_id, source.volume_size, description, encrypted, kms_key_id, source.id
        )
        snapshot = insert_snapshot(ebs, db, new, tags)
    submit_copy_snapshot(ebs, source.id, snapshot.id)
    return snapshot


def _source_region(ebs: Ebs, name: str) -> Ebs:
    if name == ebs.region.name:
        return ebs
    served = ebs.regions.names if ebs.regions else ()
    if ebs.regions is None or name not in served:
        raise errors.InvalidParameterValue(
            f"Value ({name}) for parameter SourceRegion is invalid. Expected a region "
            "that DescribeRegions lists."
        )
    return ebs.regions.get(name, reading=True)


# The state message of a copy whose KMS key EBS cannot use. EC2 checks the key
# asynchronously, so CopySnapshot answers and the copy then fails (CopySnapshot's
# KmsKeyId documentation); the wording is EC2's as AWS Backup relays it
# (aws-samples/aws-backup-automation#2: "snapshot copy failed with error: Given key ID
# is not accessible").
KEY_NOT_ACCESSIBLE = "Given key ID is not accessible"


def submit_copy_snapshot(ebs: Ebs, source_snapshot_id: str, snapshot_id: str) -> None:
    def copy(progress: Callable[[int], None]) -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT encrypted, kms_key_id FROM snapshots WHERE id=?", (snapshot_id,)
            ).fetchone()
        if row is not None and row["encrypted"] and row["kms_key_id"]:
            unusable = kms_keys.unusable_for_ebs(ebs, row["kms_key_id"])
            if unusable is not None:
                log.warning(
                    "copy %s failed: its KMS key cannot be used (%s)", snapshot_id, unusable
                )
                raise BackendError(KEY_NOT_ACCESSIBLE)
        ebs.backend.copy_snapshot(source_snapshot_id, snapshot_id, progress)

    submit_snapshot_data(
        ebs, snapshot_id, [source_snapshot_id, snapshot_id], copy, f"copy {source_snapshot_id}"
    )


def describe_snapshots(
    ebs: Ebs,
    *,
    snapshot_ids: Sequence[str] = (),
    owner_ids: Sequence[str] = (),
    restorable_by: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[Snapshot]:
    check_filters(filters, SNAPSHOT_FILTERS)
    for snapshot_id in snapshot_ids:
        ids.check(ids.SNAPSHOT, snapshot_id)
    with ebs.store.transaction() as db:
        snapshots = load_snapshots(db, ebs.account_id, snapshot_ids or None)
    if snapshot_ids:
        found = {s.id for s in snapshots}
        missing = [s for s in snapshot_ids if s not in found]
        if missing:
            raise errors.InvalidSnapshotNotFound(", ".join(missing))
    check_dry_run(dry_run)
    account = ebs.region.account_id
    if owner_ids and not any(owner in ("self", account) for owner in owner_ids):
        # Every snapshot here is owned by this account; "amazon" and others own none.
        return []
    if restorable_by:
        snapshots = [
            s
            for s in snapshots
            if s.public
            or any(user in ("self", account) or user in s.shared_with for user in restorable_by)
        ]
    return [s for s in snapshots if matches(snapshot_filter_values(s), filters)]


def delete_snapshot(ebs: Ebs, snapshot_id: str, *, dry_run: bool = False) -> None:
    with ebs.store.transaction() as db:
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
        check_unlocked(db, ebs.account_id, snapshot_id, "deleted")
        check_dry_run(dry_run)
        if snapshot.state == SnapshotState.PENDING:
            # EBS accepts the delete and carries it out once the snapshot completes;
            # until then it stays visible as `pending`.
            db.execute("UPDATE snapshots SET delete_requested=1 WHERE id=?", (snapshot_id,))
            return
        retained = retain_or_remove(ebs, db, snapshot_id)
    submit_disposal(ebs, snapshot_id, retained)


def snapshot_attribute(
    ebs: Ebs, snapshot_id: str, attribute: str, *, dry_run: bool = False
) -> Snapshot:
    if attribute not in ("createVolumePermission", "productCodes"):
        raise errors.InvalidParameterValue(
            f"Value ({attribute}) for parameter attribute is invalid. "
            "Valid attributes: createVolumePermission, productCodes."
        )
    with ebs.store.transaction() as db:
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
    check_dry_run(dry_run)
    return snapshot


def modify_snapshot_permission(
    ebs: Ebs,
    snapshot_id: str,
    add: Iterable[tuple[str, str]],
    remove: Iterable[tuple[str, str]],
    *,
    dry_run: bool = False,
) -> None:
    """Grant or revoke createVolumePermission; grantees are ("user", id) or ("group", "all")."""
    add, remove = list(add), list(remove)
    for kind, grantee in add + remove:
        if kind == "group" and grantee != "all":
            # "all" is the only group (botocore's PermissionGroup enum). EC2 refuses another
            # with InvalidParameterValue; for AMIs it has its own code instead,
            # InvalidAMIAttributeItemValue (hashicorp/packer#1068). No snapshot-specific
            # code or text was found, so the wording is fakestor's.
            raise errors.InvalidParameterValue(
                f"Value ({grantee}) for parameter UserGroup is invalid. Only 'all' is valid."
            )
        if kind == "user" and not re.fullmatch(r"[0-9]{12}", grantee):
            raise errors.InvalidParameterValue(
                f"Value ({grantee}) for parameter UserId is invalid. "
                "Expected a 12-digit AWS account id."
            )
    if not add and not remove:
        raise errors.MissingParameter("CreateVolumePermission (Add or Remove)")
    with ebs.store.transaction() as db:
        snapshot = get_snapshot(db, ebs.account_id, snapshot_id)
        if snapshot.encrypted and ("group", "all") in add:
            raise errors.OperationNotPermitted(
                f"Encrypted snapshot {snapshot_id} cannot be made public."
            )
        check_dry_run(dry_run)
        db.executemany(
            "INSERT OR IGNORE INTO snapshot_permissions VALUES (?, ?, ?)",
            [(snapshot_id, kind, grantee) for kind, grantee in add],
        )
        db.executemany(
            "DELETE FROM snapshot_permissions WHERE snapshot_id=? AND grantee_kind=? AND grantee=?",
            [(snapshot_id, kind, grantee) for kind, grantee in remove],
        )


def reset_snapshot_permission(ebs: Ebs, snapshot_id: str, *, dry_run: bool = False) -> None:
    with ebs.store.transaction() as db:
        get_snapshot(db, ebs.account_id, snapshot_id)
        check_dry_run(dry_run)
        db.execute("DELETE FROM snapshot_permissions WHERE snapshot_id=?", (snapshot_id,))
