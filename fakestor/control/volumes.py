"""Volumes: CreateVolume, DescribeVolumes, DeleteVolume, their status and attributes,
and the tasks that create and delete their data."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backends import BackendError
from fakestor import errors, ids
from fakestor.control import (
    faults,
    idempotency,
    kms_keys,
    recycle_bin_entry,
    rules,
    server_faults,
    volume_initializations,
    volume_metrics,
)
from fakestor.control.account import check_zone, resolve_encryption
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filter_values import (
    VOLUME_FILTERS,
    VOLUME_STATUS_FILTERS,
    volume_filter_values,
    volume_status_filter_values,
)
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.loaders import get_snapshot, get_volume, load_volumes
from fakestor.control.requests import (
    VolumeRequest,
)
from fakestor.control.resources import (
    Snapshot,
    Volume,
    to_text,
    utcnow,
)
from fakestor.control.snapshot_tiers import check_in_standard_tier
from fakestor.control.states import (
    InstanceState,
    SnapshotState,
    VolumeState,
)
from fakestor.control.tags import set_tags, tags_for
from fakestor.control.tasks import RetryLater

log = logging.getLogger(__name__)


def clear_failure(db: sqlite3.Connection, volume_id: str) -> None:
    """Forget the last failed operation's reason once one succeeds; damage stays reported."""
    db.execute(
        "UPDATE volumes SET status_reason=NULL WHERE id=? AND io_enabled=1 AND "
        f"state!='{VolumeState.ERROR}'",
        (volume_id,),
    )


def restorable_snapshot(
    ebs: Ebs, db: sqlite3.Connection, snapshot_id: str, *, launch: bool = False
) -> Snapshot:
    """The snapshot a new volume restores from: it must be completed and not archived.

    A `launch` may also restore Amazon's snapshots behind a built-in image, which the
    account can neither see nor restore with CreateVolume.
    """
    snapshot = get_snapshot(db, ebs.account_id, snapshot_id, others=launch)
    if snapshot.state != SnapshotState.COMPLETED:
        raise errors.IncorrectState(
            f"Snapshot '{snapshot.id}' is in invalid state - {snapshot.state}"
        )
    check_in_standard_tier(db, snapshot.id)
    return snapshot


def check_capacity(ebs: Ebs, size_gib: int) -> None:
    """Refuse up front a size EBS allows but this data dir cannot hold."""
    limit = ebs.backend.size_limit()
    if limit is not None and size_gib > limit.largest_gib:
        raise errors.InsufficientVolumeCapacity(
            f"There is not enough capacity to fulfill your EBS volume provision request: "
            f"a {size_gib} GiB volume does not fit here ({limit.reason})."
        )


def create_volume(
    ebs: Ebs,
    request: VolumeRequest,
    *,
    client_token: idempotency.ClientToken | None = None,
    dry_run: bool = False,
) -> Volume:
    if request.zone is None:
        raise errors.MissingParameter("AvailabilityZone or AvailabilityZoneId")
    zone = check_zone(ebs, request.zone)
    tags = tags_for(request.tag_specs, "volume")
    volume_type = request.volume_type or rules.DEFAULT_VOLUME_TYPE
    with ebs.store.transaction() as db:
        # Zonal idempotency: the same token in another zone is another request.
        earlier = idempotency.replay(
            db, idempotency.CREATE_VOLUME, client_token, zone, dry_run=dry_run
        )
        if earlier is not None:
            return idempotency.still_there(load_volumes(db, [earlier]))[0]
        size = request.size
        snapshot = None
        volume_initializations.check_rate(request.initialization_rate, request.snapshot_id)
        if request.snapshot_id is not None:
            snapshot = restorable_snapshot(ebs, db, request.snapshot_id)
            if size is None:
                size = snapshot.volume_size
            elif size < snapshot.volume_size:
                raise errors.InvalidParameterValue(
                    f"Volume of {size}GiB is too small; minimum is "
                    f"{snapshot.volume_size}GiB (the size of {snapshot.id})."
                )
        elif size is None:
            raise errors.MissingParameter("size or snapshotId")
        encrypted, kms_key_id = resolve_encryption(
            ebs, request.encrypted, request.kms_key_id, snapshot, "a volume restored from it"
        )
        performance = rules.check_volume_config(
            volume_type, size, request.iops, request.throughput, request.multi_attach
        )
        check_capacity(ebs, size)
        server_faults.check_capacity(ebs, zone, volume_type)
        check_dry_run(dry_run)
        volume_id = insert_volume(
            db,
            NewVolume(
                size, volume_type, performance, zone, request.snapshot_id, encrypted, kms_key_id,
                request.multi_attach,
            ),
            tags,
        )  # fmt: skip
        initializes = request.snapshot_id is not None and volume_initializations.begin_restore(
            db, volume_id, zone, request.snapshot_id, request.initialization_rate, ebs.time_scale
        )
        idempotency.record(db, idempotency.CREATE_VOLUME, client_token, zone, volume_id)
        io_faulted = faults.record_io_changes(db, {volume_id: None})
        volume = get_volume(db, volume_id)
    faults.apply_io_faults(ebs, io_faulted)
    submit_create_volume(ebs, volume_id, request.snapshot_id)
    if initializes:
        volume_initializations.submit_initialization(ebs, volume_id)
    return volume


@dataclass(frozen=True)
class NewVolume:
    """What a new volume's record starts with, once its request has been checked."""

    size: int
    volume_type: str
    performance: rules.Performance
    zone: str
    snapshot_id: str | None
    encrypted: bool
    kms_key_id: str | None
    multi_attach: bool = False


def insert_volume(db: sqlite3.Connection, new: NewVolume, tags: Mapping[str, str]) -> str:
    """Record a volume `creating`; the caller submits the task that creates its data."""
    volume_id = ids.new_id(ids.VOLUME)
    db.execute(
        "INSERT INTO volumes(id, size, volume_type, iops, throughput, zone, state, "
        "snapshot_id, encrypted, kms_key_id, multi_attach, create_time) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            volume_id,
            new.size,
            new.volume_type,
            new.performance.iops,
            new.performance.throughput,
            new.zone,
            VolumeState.CREATING,
            new.snapshot_id,
            int(new.encrypted),
            new.kms_key_id,
            int(new.multi_attach),
            to_text(utcnow()),
        ),
    )
    set_tags(db, volume_id, "volume", tags)
    return volume_id


def submit_create_volume(ebs: Ebs, volume_id: str, snapshot_id: str | None) -> None:
    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT size, snapshot_id, state, encrypted, kms_key_id, fast_restored "
                "FROM volumes WHERE id=?",
                (volume_id,),
            ).fetchone()
            injected = faults.tag_value(db, volume_id, faults.CREATE)
        if row is None or row["state"] != VolumeState.CREATING:
            return
        if row["encrypted"] and row["kms_key_id"]:
            unusable = kms_keys.unusable_for_ebs(ebs, row["kms_key_id"])
            if unusable is not None:
                vanish_volume(ebs, volume_id, unusable)
                return
        if injected == "error":
            set_volume_state(
                ebs, volume_id, VolumeState.ERROR,
                reason=f"create failed: fault {faults.PREFIX}{faults.CREATE}={injected}",
            )  # fmt: skip
            return
        try:
            ebs.backend.create_volume(volume_id, row["size"], row["snapshot_id"])
            if row["fast_restored"]:  # fully initialized at once, as EBS delivers it
                ebs.backend.restore_whole(volume_id)
        except BackendError as failure:
            set_volume_state(ebs, volume_id, VolumeState.ERROR, reason=str(failure))
            return
        with ebs.store.transaction() as db:
            # A volume a launch attaches is in use from the start.
            attached = db.execute(
                "SELECT 1 FROM attachments WHERE volume_id=?", (volume_id,)
            ).fetchone()
            state = VolumeState.IN_USE if attached else VolumeState.AVAILABLE
            set_volume_state(ebs, volume_id, state)

    def failed(failure: Exception) -> None:
        set_volume_state(ebs, volume_id, VolumeState.ERROR, reason=f"create failed: {failure}")

    # Keyed on the snapshot too, so a DeleteSnapshot queues behind the restore.
    keys = [volume_id, snapshot_id] if snapshot_id else [volume_id]
    ebs.tasks.submit(keys, work, f"create {volume_id}", on_failure=failed)


# EC2's state reason for a launch whose volume's KMS key it cannot use (quoted from
# EC2 in CiscoDevNet/cloud-cml#8 and other Terraform "unexpected state 'shutting-down'"
# reports): the instance goes pending -> shutting-down -> terminated.
KMS_KEY_STATE_REASON = (
    "Client.InvalidKMSKey.InvalidState",
    "Client.InvalidKMSKey.InvalidState: The KMS key provided is in an incorrect state",
)


def vanish_volume(ebs: Ebs, volume_id: str, why: str) -> None:
    """A volume whose KMS key EBS cannot use: CreateVolume answered `creating`, then the
    volume is gone and DescribeVolumes answers InvalidVolume.NotFound. This is EC2's way
    ("Amazon Web Services authenticates the KMS key asynchronously ... the action can
    appear to complete, but eventually fails", CreateVolume's KmsKeyId; seen in
    aws/aws-cli#2604, aws/aws-sdk-ruby#1222, kubernetes/kubernetes#48936,
    hashicorp/terraform-provider-aws#12507). The launch it was made for, if any, starts
    shutting down with EC2's reason, and its launch task terminates it."""
    log.warning("volume %s not created: its KMS key cannot be used (%s)", volume_id, why)
    with ebs.store.transaction() as db:
        db.execute(
            "UPDATE instances SET state=?, state_reason=? WHERE state=? AND id IN "
            "(SELECT instance_id FROM attachments WHERE volume_id=?)",
            (
                InstanceState.SHUTTING_DOWN,
                json.dumps(KMS_KEY_STATE_REASON),
                InstanceState.PENDING,
                volume_id,
            ),
        )
        db.execute("DELETE FROM attachments WHERE volume_id=?", (volume_id,))
        db.execute("DELETE FROM tags WHERE resource_id=?", (volume_id,))
        db.execute("DELETE FROM volume_initializations WHERE volume_id=?", (volume_id,))
        db.execute("DELETE FROM volumes WHERE id=?", (volume_id,))


def set_status_reason(ebs: Ebs, volume_id: str, reason: str) -> None:
    with ebs.store.transaction() as db:
        db.execute("UPDATE volumes SET status_reason=? WHERE id=?", (reason, volume_id))


def set_volume_state(ebs: Ebs, volume_id: str, state: str, *, reason: str | None = None) -> None:
    with ebs.store.transaction() as db:
        db.execute(
            "UPDATE volumes SET state=?, status_reason=? WHERE id=?",
            (state, reason, volume_id),
        )


def describe_volumes(
    ebs: Ebs,
    *,
    volume_ids: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[Volume]:
    check_filters(filters, VOLUME_FILTERS)
    for volume_id in volume_ids:
        ids.check(ids.VOLUME, volume_id)
    with ebs.store.transaction() as db:
        volumes = load_volumes(db, volume_ids or None)
    if volume_ids:
        found = {volume.id for volume in volumes}
        missing = [volume_id for volume_id in volume_ids if volume_id not in found]
        if missing:
            raise errors.InvalidVolumeNotFound(", ".join(missing))
    check_dry_run(dry_run)
    return [
        volume
        for volume in volumes
        if matches(volume_filter_values(volume, ebs.region.zone_id(volume.zone)), filters)
    ]


def delete_volume(ebs: Ebs, volume_id: str, *, dry_run: bool = False) -> None:
    with ebs.store.transaction() as db:
        volume = get_volume(db, volume_id)
        if volume.attachments:
            raise errors.VolumeInUse(
                f"Volume {volume_id} is currently attached to {volume.attachments[0].instance_id}"
            )
        if volume.state not in (VolumeState.AVAILABLE, VolumeState.ERROR):
            raise errors.IncorrectState(
                f"The volume '{volume_id}' is '{volume.state}'; only an "
                f"'{VolumeState.AVAILABLE}' or "
                f"'{VolumeState.ERROR}' volume can be deleted."
            )
        check_dry_run(dry_run)
        # An `error` volume failed to be created: AWS's Recycle Bin does not protect those.
        retained = volume.state == VolumeState.AVAILABLE and recycle_bin_entry.retain(
            ebs, db, recycle_bin_entry.VOLUME, volume_id, volume.tags
        )
        if not retained:
            db.execute(
                f"UPDATE volumes SET state='{VolumeState.DELETING}' WHERE id=?", (volume_id,)
            )
    if retained:
        submit_volume_purge(ebs, volume_id)
    else:
        submit_delete_volume(ebs, volume_id)


def submit_volume_purge(ebs: Ebs, volume_id: str) -> None:
    """Delete a volume in the Recycle Bin, with its data, when its retention ends; restored
    meanwhile, it stays."""

    def work() -> None:
        with ebs.store.transaction() as db:
            wait = recycle_bin_entry.expire(db, recycle_bin_entry.VOLUME, volume_id)
            if wait == 0:
                db.execute(
                    f"UPDATE volumes SET state='{VolumeState.DELETING}' WHERE id=?", (volume_id,)
                )
        if wait is None:
            return
        if wait > 0:
            raise RetryLater(wait)  # waits on a timer, not in a worker
        submit_delete_volume(ebs, volume_id)

    ebs.tasks.submit([volume_id], work, f"recycle bin retention of {volume_id}")


def submit_delete_volume(ebs: Ebs, volume_id: str) -> None:
    def failed(failure: Exception) -> None:
        set_volume_state(ebs, volume_id, VolumeState.ERROR, reason=f"delete failed: {failure}")

    def work() -> None:
        try:
            ebs.backend.delete_volume(volume_id)
        except BackendError as failure:
            failed(failure)
            return
        ebs.backend.set_io_fault(volume_id, None)
        with ebs.store.transaction() as db:
            db.execute("DELETE FROM tags WHERE resource_id=?", (volume_id,))
            db.execute("DELETE FROM modifications WHERE volume_id=?", (volume_id,))
            db.execute("DELETE FROM volume_initializations WHERE volume_id=?", (volume_id,))
            db.execute("DELETE FROM volumes WHERE id=?", (volume_id,))

    ebs.tasks.submit([volume_id], work, f"delete {volume_id}", on_failure=failed)


def describe_volume_status(
    ebs: Ebs,
    *,
    volume_ids: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[Volume]:
    check_filters(filters, VOLUME_STATUS_FILTERS)
    found = describe_volumes(ebs, volume_ids=volume_ids, dry_run=dry_run)
    with ebs.store.transaction() as db:
        for volume in found:
            if volume.volume_type in ("io1", "io2"):
                volume.io_performance = volume_metrics.io_performance(db, volume.id)
    return [v for v in found if matches(volume_status_filter_values(v), filters)]


def volume_attribute(ebs: Ebs, volume_id: str, attribute: str, *, dry_run: bool = False) -> Volume:
    if attribute not in ("autoEnableIO", "productCodes"):
        raise errors.InvalidParameterValue(
            f"Value ({attribute}) for parameter attribute is invalid. "
            "Valid attributes: autoEnableIO, productCodes."
        )
    with ebs.store.transaction() as db:
        volume = get_volume(db, volume_id)
    check_dry_run(dry_run)
    return volume


def modify_volume_attribute(
    ebs: Ebs, volume_id: str, auto_enable_io: bool | None, *, dry_run: bool = False
) -> None:
    with ebs.store.transaction() as db:
        get_volume(db, volume_id)
        if auto_enable_io is None:
            raise errors.MissingParameter("AutoEnableIO")
        check_dry_run(dry_run)
        db.execute(
            "UPDATE volumes SET auto_enable_io=? WHERE id=?", (int(auto_enable_io), volume_id)
        )


def enable_volume_io(ebs: Ebs, volume_id: str, *, dry_run: bool = False) -> None:
    with ebs.store.transaction() as db:
        get_volume(db, volume_id)
        check_dry_run(dry_run)
        db.execute("UPDATE volumes SET io_enabled=1 WHERE id=?", (volume_id,))
    faults.apply_io_faults(ebs, [volume_id])  # lifts an injected impairment
