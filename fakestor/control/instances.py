"""Instances: RunInstances, DescribeInstances, TerminateInstances and their tasks."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

from fakestor import errors, ids
from fakestor.control import exports, idempotency, instance_types, recycle_bin_entry
from fakestor.control.account import check_zone
from fakestor.control.attachments import drop_attachment, submit_attach
from fakestor.control.context import HOST_INSTANCE_TYPE, Ebs, check_dry_run
from fakestor.control.filter_values import (
    INSTANCE_FILTERS,
    instance_filter_values,
)
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.images import get_image
from fakestor.control.launches import plan_launch, record_launch_volumes
from fakestor.control.loaders import attachment_from_row, get_instance, load_instances, tags_of
from fakestor.control.requests import InstanceAttributeChange, LaunchRequest
from fakestor.control.resources import (
    Instance,
    to_text,
    utcnow,
)
from fakestor.control.states import (
    InstanceState,
    VolumeState,
)
from fakestor.control.tags import set_tags, tags_for
from fakestor.control.volume_initializations import submit_initialization
from fakestor.control.volumes import (
    submit_create_volume,
    submit_delete_volume,
    submit_volume_purge,
)

log = logging.getLogger(__name__)


def run_instances(
    ebs: Ebs,
    request: LaunchRequest,
    *,
    client_token: idempotency.ClientToken | None = None,
    dry_run: bool = False,
) -> list[Instance]:
    image_id, min_count, max_count = request.image_id, request.min_count, request.max_count
    if not image_id.startswith("ami-"):
        raise errors.InvalidParameterValue(f'Invalid id: "{image_id}" (expecting "ami-...")')
    if min_count < 1 or max_count < min_count:
        raise errors.InvalidParameterValue(
            "MinCount must be at least 1 and MaxCount at least MinCount."
        )
    if max_count > 20:
        raise errors.InvalidParameterValue(
            f"Value ({max_count}) for parameter maxCount is invalid: fakestor launches at "
            "most 20 instances per request."
        )
    instance_types.check_launchable(request.instance_type or HOST_INSTANCE_TYPE)
    zone = check_zone(ebs, request.zone) if request.zone else ebs.region.zones[0]
    tags = tags_for(request.tag_specs, "instance", also=["volume"])
    volume_tags = tags_for(request.tag_specs, "volume", also=["instance"])
    image = get_image(ebs, image_id)
    launched: list[tuple[str, list[tuple[str, str | None]]]] = []
    reservation_id = ids.new_id(ids.RESERVATION)
    # Zonal idempotency with an explicit zone, regional without one.
    scope = zone if request.zone else ""
    with ebs.store.transaction() as db:
        plan = plan_launch(ebs, db, image, request.mappings, zone)
        check_dry_run(dry_run)
        earlier = idempotency.replay(db, idempotency.RUN_INSTANCES, client_token, scope)
        if earlier is not None:
            return list(idempotency.still_there(reservation_instances(db, earlier)))
        idempotency.record(db, idempotency.RUN_INSTANCES, client_token, scope, reservation_id)
        for launch_index in range(max_count):
            instance_id = ids.new_id(ids.INSTANCE)
            db.execute(
                "INSERT INTO instances(id, zone, state, instance_type, image_id, launch_time, "
                "reservation_id, launch_index, root_device_name, disable_api_termination) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    instance_id,
                    zone,
                    InstanceState.PENDING,
                    request.instance_type or HOST_INSTANCE_TYPE,
                    image_id,
                    to_text(utcnow()),
                    reservation_id,
                    launch_index,
                    image.root_device_name,
                    int(request.disable_api_termination),
                ),
            )
            set_tags(db, instance_id, "instance", tags)
            launched.append(
                (
                    instance_id,
                    record_launch_volumes(db, instance_id, plan, volume_tags, ebs.time_scale),
                )
            )
        ids_launched = [instance_id for instance_id, _ in launched]
        instances = sorted(
            (i for i in load_instances(db) if i.id in ids_launched),
            key=lambda i: i.launch_index,
        )
    for instance_id, volumes in launched:
        for volume_id, snapshot_id in volumes:
            submit_create_volume(ebs, volume_id, snapshot_id)
            if snapshot_id is not None:  # restored: initialized (at once if fast-restored)
                submit_initialization(ebs, volume_id)
            submit_attach(ebs, volume_id, instance_id)
        # Running once its volumes are: the launch queues behind their tasks.
        submit_launch(ebs, instance_id, [volume_id for volume_id, _ in volumes])
    return instances


def reservation_instances(db: sqlite3.Connection, reservation_id: str) -> list[Instance]:
    found = [i for i in load_instances(db) if i.reservation_id == reservation_id]
    return sorted(found, key=lambda i: i.launch_index)


def submit_launch(ebs: Ebs, instance_id: str, volume_ids: Sequence[str] = ()) -> None:
    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT state, state_reason FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
        if row is not None and row["state"] == InstanceState.SHUTTING_DOWN and row["state_reason"]:
            # EC2 ended the launch (a volume's KMS key it cannot use: volumes.vanish_volume).
            submit_terminate(ebs, instance_id, volume_ids)
            return
        wait = ebs.backend.latency
        if wait and not ebs.tasks.sleep(wait):
            return
        with ebs.store.transaction() as db:
            db.execute(
                f"UPDATE instances SET state='{InstanceState.RUNNING}' WHERE id=? AND "
                f"state='{InstanceState.PENDING}'",
                (instance_id,),
            )
            has_node = exports.node_address(db, instance_id) is not None
        if has_node:  # started again: its node gets its volumes back
            exports.submit_instance_exports(ebs, instance_id)

    def failed(failure: Exception) -> None:
        with ebs.store.transaction() as db:
            db.execute(
                f"UPDATE instances SET state='{InstanceState.TERMINATED}' WHERE id=? AND "
                f"state='{InstanceState.PENDING}'",
                (instance_id,),
            )

    ebs.tasks.submit([instance_id, *volume_ids], work, f"launch {instance_id}", on_failure=failed)


def describe_instances(
    ebs: Ebs,
    *,
    instance_ids: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[Instance]:
    check_filters(filters, INSTANCE_FILTERS)
    with ebs.store.transaction() as db:
        for instance_id in instance_ids:
            get_instance(db, instance_id)
        instances = load_instances(db)
    check_dry_run(dry_run)
    if instance_ids:
        instances = [i for i in instances if i.id in instance_ids]
    return [i for i in instances if matches(instance_filter_values(i), filters)]


def _instances_to_change(
    db: sqlite3.Connection, instance_ids: Sequence[str], verb: str
) -> list[Instance]:
    """The named instances, none of them the host, which no state change may touch."""
    if not instance_ids:
        raise errors.MissingParameter("InstanceId")
    instances = [get_instance(db, instance_id) for instance_id in instance_ids]
    for instance in instances:
        if instance.is_host:
            raise errors.OperationNotPermitted(
                f"The instance '{instance.id}' is the machine fakestor runs on and "
                f"cannot be {verb}."
            )
    return instances


def terminate_instances(
    ebs: Ebs, instance_ids: Sequence[str], *, dry_run: bool = False
) -> list[tuple[Instance, InstanceState]]:
    """Start terminating; returns each instance with its previous state."""
    changes = []
    with ebs.store.transaction() as db:
        instances = _instances_to_change(db, instance_ids, "terminated")
        for instance in instances:
            if instance.disable_api_termination:
                raise errors.OperationNotPermitted(
                    f"The instance '{instance.id}' may not be terminated. Modify its "
                    "'disableApiTermination' instance attribute and try again."
                )
        check_dry_run(dry_run)
        for instance in instances:
            previous = instance.state
            if previous != InstanceState.TERMINATED:
                instance.state = InstanceState.SHUTTING_DOWN
                db.execute(
                    f"UPDATE instances SET state='{InstanceState.SHUTTING_DOWN}' WHERE id=?",
                    (instance.id,),
                )
            changes.append((instance, previous))
    for instance, previous in changes:
        if previous != InstanceState.TERMINATED:
            submit_terminate(ebs, instance.id, [a.volume_id for a in instance.attachments])
    return changes


def submit_terminate(ebs: Ebs, instance_id: str, volume_ids: Sequence[str] = ()) -> None:
    def work() -> None:
        exports.close_instance_exports(ebs, instance_id)  # its node is fenced at once
        with ebs.store.transaction() as db:
            attachments = [
                attachment_from_row(row)
                for row in db.execute(
                    "SELECT * FROM attachments WHERE instance_id=?", (instance_id,)
                )
            ]
            # The host is never terminated; a node's devices went with its exports.
            for attachment in attachments:
                drop_attachment(db, attachment.volume_id, instance_id)
            doomed = [a.volume_id for a in attachments if a.delete_on_termination]
            # A volume deleted by termination is protected by the Recycle Bin, as on AWS,
            # unless EC2 ended the launch itself (a failed launch's volumes are not).
            reason = db.execute(
                "SELECT state_reason FROM instances WHERE id=?", (instance_id,)
            ).fetchone()
            failed_launch = reason is not None and reason["state_reason"] is not None
            binned = [
                volume_id
                for volume_id in doomed
                if not failed_launch and _retained(ebs, db, volume_id)
            ]
            doomed = [volume_id for volume_id in doomed if volume_id not in binned]
            for volume_id in doomed:
                db.execute(
                    f"UPDATE volumes SET state='{VolumeState.DELETING}' WHERE id=? AND "
                    f"state='{VolumeState.AVAILABLE}'",
                    (volume_id,),
                )
            db.execute(
                f"UPDATE instances SET state='{InstanceState.TERMINATED}' WHERE id=?",
                (instance_id,),
            )
        for volume_id in doomed:
            submit_delete_volume(ebs, volume_id)
        for volume_id in binned:
            submit_volume_purge(ebs, volume_id)

    # Behind the tasks of its volumes (a launch's creates and attaches) that came first.
    ebs.tasks.submit([instance_id, *volume_ids], work, f"terminate {instance_id}")


def _retained(ebs: Ebs, db: sqlite3.Connection, volume_id: str) -> bool:
    """Whether a Recycle Bin rule takes a volume the termination deletes (an `available`
    one: a volume whose creation failed is not protected)."""
    row = db.execute("SELECT state FROM volumes WHERE id=?", (volume_id,)).fetchone()
    if row is None or row["state"] != VolumeState.AVAILABLE:
        return False
    tags = tags_of(db, "volume", [volume_id]).get(volume_id, {})
    return recycle_bin_entry.retain(ebs, db, recycle_bin_entry.VOLUME, volume_id, tags)


# ---- stop, start, reboot ------------------------------------------------------------

_STOPPABLE = {InstanceState.RUNNING, InstanceState.PENDING, InstanceState.STOPPING}


def _change_states(
    ebs: Ebs,
    instance_ids: Sequence[str],
    allowed: set[InstanceState],
    to: InstanceState,
    verb: str,
    dry_run: bool,
) -> list[tuple[Instance, InstanceState]]:
    changes = []
    with ebs.store.transaction() as db:
        instances = _instances_to_change(db, instance_ids, verb)
        for instance in instances:
            if instance.state not in allowed and instance.state != to:
                raise errors.IncorrectInstanceState(
                    f"The instance '{instance.id}' is not in a state from which it can be {verb}."
                )
        check_dry_run(dry_run)
        for instance in instances:
            previous = instance.state
            if previous not in (to, _SETTLED[to]):
                db.execute("UPDATE instances SET state=? WHERE id=?", (to, instance.id))
                instance.state = to
            changes.append((instance, previous))
    return changes


_SETTLED = {
    InstanceState.STOPPING: InstanceState.STOPPED,
    InstanceState.PENDING: InstanceState.RUNNING,
}


def stop_instances(
    ebs: Ebs, instance_ids: Sequence[str], *, dry_run: bool = False
) -> list[tuple[Instance, InstanceState]]:
    """Stop: stopping, then stopped; the volumes stay attached, as on EC2."""
    changes = _change_states(
        ebs, instance_ids, _STOPPABLE, InstanceState.STOPPING, "stopped", dry_run
    )
    for instance, previous in changes:
        if previous not in (InstanceState.STOPPING, InstanceState.STOPPED):
            submit_settle(ebs, instance.id, InstanceState.STOPPING)
    return changes


def start_instances(
    ebs: Ebs, instance_ids: Sequence[str], *, dry_run: bool = False
) -> list[tuple[Instance, InstanceState]]:
    """Start a stopped instance: pending, then running."""
    changes = _change_states(
        ebs, instance_ids, {InstanceState.STOPPED}, InstanceState.PENDING, "started", dry_run
    )
    for instance, previous in changes:
        if previous == InstanceState.STOPPED:
            submit_launch(ebs, instance.id)
    return changes


def reboot_instances(ebs: Ebs, instance_ids: Sequence[str], *, dry_run: bool = False) -> None:
    """A reboot keeps the instance running and its volumes attached."""
    if not instance_ids:
        raise errors.MissingParameter("InstanceId")
    with ebs.store.transaction() as db:
        for instance_id in instance_ids:
            get_instance(db, instance_id)
    check_dry_run(dry_run)


def submit_settle(ebs: Ebs, instance_id: str, state: InstanceState) -> None:
    """Move an instance from `state` (stopping) to where it settles (stopped)."""

    def work() -> None:
        wait = ebs.backend.latency
        if wait and not ebs.tasks.sleep(wait):
            return
        # A stopped instance has no devices: its node loses them, its volumes stay attached.
        exports.close_instance_exports(ebs, instance_id)
        with ebs.store.transaction() as db:
            db.execute(
                "UPDATE instances SET state=? WHERE id=? AND state=?",
                (_SETTLED[state], instance_id, state),
            )

    ebs.tasks.submit([instance_id], work, f"settle {instance_id} from {state}")


# ---- attributes ----------------------------------------------------------------------

INSTANCE_ATTRIBUTES = (
    "blockDeviceMapping",
    "disableApiTermination",
    "instanceType",
    "rootDeviceName",
)


def modify_instance_attribute(
    ebs: Ebs, instance_id: str, change: InstanceAttributeChange, *, dry_run: bool = False
) -> None:
    with ebs.store.transaction() as db:
        instance = get_instance(db, instance_id)
        devices = {a.device: a for a in instance.attachments}
        for device in change.delete_on_termination:
            if device not in devices:
                raise errors.InvalidInstanceAttributeValue(
                    f"No device is currently mapped at {device}"
                )
        if change.instance_type is not None and instance.state != InstanceState.STOPPED:
            raise errors.IncorrectInstanceState(
                f"The instance '{instance_id}' is not in the 'stopped' state."
            )
        check_dry_run(dry_run)
        for device, delete in change.delete_on_termination.items():
            db.execute(
                "UPDATE attachments SET delete_on_termination=? WHERE volume_id=? AND "
                "instance_id=?",
                (int(delete), devices[device].volume_id, instance_id),
            )
        if change.instance_type is not None:
            db.execute(
                "UPDATE instances SET instance_type=? WHERE id=?",
                (change.instance_type, instance_id),
            )
        if change.disable_api_termination is not None:
            db.execute(
                "UPDATE instances SET disable_api_termination=? WHERE id=?",
                (int(change.disable_api_termination), instance_id),
            )


def describe_instance_attribute(
    ebs: Ebs, instance_id: str, attribute: str, *, dry_run: bool = False
) -> Instance:
    if attribute not in INSTANCE_ATTRIBUTES:
        raise errors.InvalidParameterValue(
            f"Value ({attribute}) for parameter attribute is invalid. fakestor serves "
            f"{', '.join(INSTANCE_ATTRIBUTES)}."
        )
    with ebs.store.transaction() as db:
        instance = get_instance(db, instance_id)
    check_dry_run(dry_run)
    return instance
