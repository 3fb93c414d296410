"""Instances: RunInstances, DescribeInstances, TerminateInstances and their tasks."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fakestor import errors, ids
from fakestor.control import instance_types
from fakestor.control.account import check_zone
from fakestor.control.attachments import drop_attachment
from fakestor.control.context import HOST_INSTANCE_TYPE, Ebs, check_dry_run
from fakestor.control.filter_values import (
    INSTANCE_FILTERS,
    instance_filter_values,
)
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.loaders import attachment_from_row, get_instance, load_instances
from fakestor.control.requests import LaunchRequest
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
from fakestor.control.volumes import submit_delete_volume

log = logging.getLogger(__name__)


def run_instances(ebs: Ebs, request: LaunchRequest, *, dry_run: bool = False) -> list[Instance]:
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
    tags = tags_for(request.tag_specs, "instance")
    check_dry_run(dry_run)
    launched = []
    reservation_id = ids.new_id(ids.RESERVATION)
    with ebs.store.transaction() as db:
        for launch_index in range(max_count):
            instance_id = ids.new_id(ids.INSTANCE)
            db.execute(
                "INSERT INTO instances(id, zone, state, instance_type, image_id, "
                "launch_time, reservation_id, launch_index) "
                f"VALUES (?, ?, '{InstanceState.PENDING}', ?, ?, ?, ?, ?)",
                (
                    instance_id,
                    zone,
                    request.instance_type or HOST_INSTANCE_TYPE,
                    image_id,
                    to_text(utcnow()),
                    reservation_id,
                    launch_index,
                ),
            )
            set_tags(db, instance_id, "instance", tags)
            launched.append(instance_id)
        instances = sorted(
            (i for i in load_instances(db) if i.id in launched), key=lambda i: i.launch_index
        )
    for instance_id in launched:
        submit_launch(ebs, instance_id)
    return instances


def submit_launch(ebs: Ebs, instance_id: str) -> None:
    def work() -> None:
        wait = ebs.backend.latency
        if wait and not ebs.tasks.sleep(wait):
            return
        with ebs.store.transaction() as db:
            db.execute(
                f"UPDATE instances SET state='{InstanceState.RUNNING}' WHERE id=? AND "
                f"state='{InstanceState.PENDING}'",
                (instance_id,),
            )

    def failed(failure: Exception) -> None:
        with ebs.store.transaction() as db:
            db.execute(
                f"UPDATE instances SET state='{InstanceState.TERMINATED}' WHERE id=? AND "
                f"state='{InstanceState.PENDING}'",
                (instance_id,),
            )

    ebs.tasks.submit([instance_id], work, f"launch {instance_id}", on_failure=failed)


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


def terminate_instances(
    ebs: Ebs, instance_ids: Sequence[str], *, dry_run: bool = False
) -> list[tuple[Instance, InstanceState]]:
    """Start terminating; returns each instance with its previous state."""
    if not instance_ids:
        raise errors.MissingParameter("InstanceId")
    changes = []
    with ebs.store.transaction() as db:
        instances = [get_instance(db, instance_id) for instance_id in instance_ids]
        for instance in instances:
            if instance.is_host:
                raise errors.OperationNotPermitted(
                    f"The instance '{instance.id}' is the machine fakestor runs on and "
                    "cannot be terminated."
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
            submit_terminate(ebs, instance.id)
    return changes


def submit_terminate(ebs: Ebs, instance_id: str) -> None:
    def work() -> None:
        with ebs.store.transaction() as db:
            attachments = [
                attachment_from_row(row)
                for row in db.execute(
                    "SELECT * FROM attachments WHERE instance_id=?", (instance_id,)
                )
            ]
            # Non-host instances have no devices: their attachments just end.
            for attachment in attachments:
                drop_attachment(db, attachment.volume_id, instance_id)
            doomed = [a.volume_id for a in attachments if a.delete_on_termination]
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

    ebs.tasks.submit([instance_id], work, f"terminate {instance_id}")
