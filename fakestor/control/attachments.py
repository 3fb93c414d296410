"""Attachments: AttachVolume and DetachVolume, and the tasks that bind and release devices."""

from __future__ import annotations

import logging
import sqlite3

from backends import BackendError, DeviceBusy
from fakestor import device_names, errors, failpoints
from fakestor.control import exports, faults, instance_types, performance_model, rules
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.loaders import get_instance, get_volume
from fakestor.control.resources import (
    Attachment,
    to_text,
    utcnow,
)
from fakestor.control.states import (
    USABLE_VOLUME,
    AttachmentState,
    InstanceState,
    VolumeState,
)
from fakestor.control.tasks import RetryLater
from fakestor.control.volumes import clear_failure, set_status_reason

log = logging.getLogger(__name__)

DETACH_RETRY_SECONDS = 1.0


def attach_volume(
    ebs: Ebs, volume_id: str, instance_id: str, device: str, *, dry_run: bool = False
) -> Attachment:
    with ebs.store.transaction() as db:
        volume = get_volume(db, volume_id)
        instance = get_instance(db, instance_id)
        if not device_names.is_device_name(device):
            raise errors.InvalidParameterValue(
                f"Value ({device!r}) for parameter device is invalid. It is not a valid EBS "
                f"device name; {device_names.DEVICE_NAME_HINT}."
            )
        if instance.state != InstanceState.RUNNING:
            raise errors.IncorrectInstanceState(
                f"The instance '{instance_id}' is not in the '{InstanceState.RUNNING}' state "
                f"(it is '{instance.state}')."
            )
        if volume.zone != instance.zone:
            raise errors.InvalidVolumeZoneMismatch(
                volume_id, volume.zone, instance_id, instance.zone
            )
        if any(a.instance_id == instance_id for a in volume.attachments):
            raise errors.VolumeInUse(f"{volume_id} is already attached to an instance")
        if volume.attachments and not volume.multi_attach:
            raise errors.VolumeInUse(
                f"{volume_id} is already attached to an instance "
                f"({volume.attachments[0].instance_id})"
            )
        if volume.multi_attach and len(volume.attachments) >= rules.MAX_MULTI_ATTACH_INSTANCES:
            raise errors.AttachmentLimitExceeded(
                f"Volume {volume_id} is attached to {len(volume.attachments)} instances, "
                f"the Multi-Attach maximum."
            )
        if volume.state not in USABLE_VOLUME:
            raise errors.IncorrectState(
                f"Volume '{volume_id}' is in the '{volume.state}' state; it can be attached "
                f"once it is '{VolumeState.AVAILABLE}'."
            )
        slot = device_names.canonical_device(device)
        if any(device_names.canonical_device(a.device) == slot for a in instance.attachments):
            raise errors.InvalidParameterValue(
                f"Invalid value '{device}' for unixDevice. Attachment point {device} is "
                "already in use"
            )
        instance_types.check_attachment_limit(instance)
        check_dry_run(dry_run)
        now = utcnow()
        db.execute(
            "INSERT INTO attachments(volume_id, instance_id, device, state, attach_time, "
            f"stuck_until) VALUES (?, ?, ?, '{AttachmentState.ATTACHING}', ?, ?)",
            (
                volume_id, instance_id, device, to_text(now),
                faults.stuck_until(db, volume_id, faults.ATTACH),
            ),
        )  # fmt: skip
        db.execute(f"UPDATE volumes SET state='{VolumeState.IN_USE}' WHERE id=?", (volume_id,))
    submit_attach(ebs, volume_id, instance_id)
    return Attachment(volume_id, instance_id, device, AttachmentState.ATTACHING, now)


def _attachment_in(
    db: sqlite3.Connection, volume_id: str, instance_id: str, state: AttachmentState
) -> sqlite3.Row | None:
    """The attachment's row (with its instance's is_host) if it is still in `state`."""
    row: sqlite3.Row | None = db.execute(
        "SELECT a.*, i.is_host FROM attachments a JOIN instances i ON i.id = a.instance_id "
        "WHERE a.volume_id=? AND a.instance_id=? AND a.state=?",
        (volume_id, instance_id, state),
    ).fetchone()
    return row


def submit_attach(ebs: Ebs, volume_id: str, instance_id: str) -> None:
    def work() -> None:
        with ebs.store.transaction() as db:
            row = _attachment_in(db, volume_id, instance_id, AttachmentState.ATTACHING)
            shape = None if row is None else performance_model.shape_for(ebs, db, volume_id)
        if row is None:
            return
        if _held(row["stuck_until"]):
            log.info("attach of %s held by its fault until a forced detach", volume_id)
            return
        performance_model.apply_shape(ebs, volume_id, shape)  # its limits, before the first I/O
        device_path = None
        try:
            if row["is_host"]:
                failpoints.hit("attach.backend")
                device_path = ebs.backend.attach_volume(volume_id, row["device"])
            elif exports.open_export(ebs, volume_id, instance_id):
                return  # 'attached' once the node agent reports the device (nodes.py)
        except BackendError as failure:
            log.warning("attach of %s failed: %s", volume_id, failure)
            failed(failure)
            return
        with ebs.store.transaction() as db:
            # A DetachVolume that came while the device was being made has set the
            # attachment `detaching`: it stays so (its detach runs next, and releases the
            # device recorded here), rather than turning `attached` under that detach.
            db.execute(
                "UPDATE attachments SET device_path=?, state=CASE WHEN state=? THEN ? "
                "ELSE state END WHERE volume_id=? AND instance_id=?",
                (
                    device_path, AttachmentState.ATTACHING, AttachmentState.ATTACHED,
                    volume_id, instance_id,
                ),
            )  # fmt: skip
            clear_failure(db, volume_id)

    def failed(failure: Exception) -> None:
        # As EC2 reports an attach that cannot complete: the attachment ends, the
        # volume is available again, and the status events say why.
        exports.close_export(ebs, volume_id, instance_id)
        with ebs.store.transaction() as db:
            drop_attachment(db, volume_id, instance_id)
            db.execute(
                "UPDATE volumes SET status_reason=? WHERE id=?",
                (f"attach to {instance_id} failed: {failure}", volume_id),
            )

    ebs.tasks.submit([volume_id], work, f"attach {volume_id} to {instance_id}", on_failure=failed)


def _held(stuck_until: str | None) -> bool:
    """Whether a held attach or detach task must stop here: True if it is held until a
    forced detach (which submits a task again); raises RetryLater if it is held until a
    time; False once it is not held."""
    wait = faults.stuck_wait(stuck_until)
    if wait is None:
        return False
    if wait == float("inf"):
        return True
    raise RetryLater(wait)


def drop_attachment(db: sqlite3.Connection, volume_id: str, instance_id: str) -> None:
    db.execute(
        "DELETE FROM attachments WHERE volume_id=? AND instance_id=?", (volume_id, instance_id)
    )
    remaining = db.execute(
        "SELECT COUNT(*) FROM attachments WHERE volume_id=?", (volume_id,)
    ).fetchone()[0]
    if not remaining:
        db.execute(
            f"UPDATE volumes SET state='{VolumeState.AVAILABLE}' WHERE id=? AND "
            f"state='{VolumeState.IN_USE}'",
            (volume_id,),
        )


def detach_volume(
    ebs: Ebs,
    volume_id: str,
    *,
    instance_id: str | None = None,
    device: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> Attachment:
    with ebs.store.transaction() as db:
        volume = get_volume(db, volume_id)
        if instance_id is not None:
            get_instance(db, instance_id)
        if volume.multi_attach and instance_id is None and volume.attachments:
            # "If you are detaching a Multi-Attach enabled volume, you must specify an
            # instance ID."
            raise errors.MissingParameter("InstanceId")
        candidates = [a for a in volume.attachments if instance_id in (None, a.instance_id)]
        if not candidates:
            if instance_id is None:
                raise errors.IncorrectState(
                    f"Volume '{volume_id}' is in the '{volume.state}' state."
                )
            raise errors.InvalidAttachmentNotFound(
                f"Volume {volume_id} can not be detached from {instance_id} because it is "
                "not attached"
            )
        if len(candidates) > 1:
            raise errors.InvalidParameterCombination(
                f"Volume {volume_id} is attached to {len(candidates)} instances; name the "
                "instance to detach it from with InstanceId."
            )
        attachment = candidates[0]
        if device is not None and device != attachment.device:
            raise errors.InvalidAttachmentNotFound(
                f"The volume {volume_id} is not attached to instance "
                f"{attachment.instance_id} as device {device}"
            )
        if attachment.state == AttachmentState.DETACHING and not force:
            raise errors.IncorrectState(f"Volume '{volume_id}' is already being detached.")
        owner = get_instance(db, attachment.instance_id)
        if (
            not owner.is_host
            and attachment.device == owner.root_device_name
            and owner.state not in (InstanceState.STOPPED, InstanceState.TERMINATED)
        ):
            # EC2: "it can't be detached while the instance is running".
            raise errors.IncorrectState(
                f"Unable to detach root volume '{volume_id}' from instance "
                f"'{owner.id}'; stop the instance first."
            )
        check_dry_run(dry_run)
        # A forced detach ends every hold; else the detach fault holds it, or what is
        # left of a held attach (that never finished, so neither can this detach).
        stuck_until = None
        if not force:
            stuck_until = faults.stuck_until(db, volume_id, faults.DETACH)
            if stuck_until is None and attachment.state == AttachmentState.ATTACHING:
                stuck_until = _stuck_until(db, volume_id, attachment.instance_id)
        db.execute(
            f"UPDATE attachments SET state='{AttachmentState.DETACHING}', force_detach=?, "
            "stuck_until=? WHERE volume_id=? AND instance_id=?",
            (
                int(force or attachment.force_detach), stuck_until, volume_id,
                attachment.instance_id,
            ),
        )  # fmt: skip
        attachment.state = AttachmentState.DETACHING
    submit_detach(ebs, volume_id, attachment.instance_id)
    return attachment


def _stuck_until(db: sqlite3.Connection, volume_id: str, instance_id: str) -> str | None:
    row = db.execute(
        "SELECT stuck_until FROM attachments WHERE volume_id=? AND instance_id=?",
        (volume_id, instance_id),
    ).fetchone()
    return None if row is None else row["stuck_until"]


def submit_detach(ebs: Ebs, volume_id: str, instance_id: str) -> None:
    def work() -> None:
        with ebs.store.transaction() as db:
            row = _attachment_in(db, volume_id, instance_id, AttachmentState.DETACHING)
            exported = row is not None and exports.is_exported(db, volume_id, instance_id)
        if row is None:
            return
        if not row["force_detach"] and _held(row["stuck_until"]):
            log.info("detach of %s held by a fault until a forced detach", volume_id)
            return
        if exported and not row["force_detach"]:
            # The node agent flushes and removes the device, then reports; the export
            # closes then (nodes.py). A node that is gone leaves it 'detaching', as EC2.
            return
        if exported:
            exports.close_export(ebs, volume_id, instance_id)  # fenced at once
        try:
            if row["is_host"]:
                ebs.backend.detach_volume(volume_id, bool(row["force_detach"]))
        except DeviceBusy:
            # As on EBS, a detach of a device still in use waits in 'detaching'
            # until the device is released or the detach is forced.
            raise RetryLater(DETACH_RETRY_SECONDS) from None
        except Exception as failure:
            # As on EBS, a detach that cannot complete stays 'detaching' (a forced
            # detach may still end it); the status events say why.
            log.warning("detach of %s failed, retrying: %r", volume_id, failure)
            set_status_reason(ebs, volume_id, f"detach from {instance_id} failed: {failure}")
            raise RetryLater(DETACH_RETRY_SECONDS) from None
        with ebs.store.transaction() as db:
            drop_attachment(db, volume_id, instance_id)
            clear_failure(db, volume_id)

    ebs.tasks.submit([volume_id], work, f"detach {volume_id} from {instance_id}")


def submit_relink(ebs: Ebs, volume_id: str) -> None:
    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT device, state FROM attachments WHERE volume_id=? AND instance_id=?",
                (volume_id, ebs.host_instance_id),
            ).fetchone()
        if row is None or row["state"] != AttachmentState.ATTACHED:
            return
        try:
            device_path = ebs.backend.attach_volume(volume_id, row["device"])
        except BackendError as failure:
            log.warning("re-attaching %s failed: %s", volume_id, failure)
            return
        with ebs.store.transaction() as db:
            db.execute(
                "UPDATE attachments SET device_path=? WHERE volume_id=? AND instance_id=?",
                (device_path, volume_id, ebs.host_instance_id),
            )

    ebs.tasks.submit([volume_id], work, f"relink {volume_id}")


def submit_release(ebs: Ebs, volume_id: str) -> None:
    def work() -> None:
        try:
            ebs.backend.detach_volume(volume_id, force=False)
        except BackendError as failure:
            log.warning("cannot release %s, left bound: %s", volume_id, failure)

    ebs.tasks.submit([volume_id], work, f"release {volume_id}")
