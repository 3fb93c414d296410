"""After a start: reconcile the records of every region with what the backend finds, then
resume every resource left in a transitional state."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from enum import StrEnum

from backends import Inventory
from fakestor.control import faults
from fakestor.control.attachments import submit_attach, submit_detach, submit_release, submit_relink
from fakestor.control.context import Ebs
from fakestor.control.direct_writes import is_direct, resume_direct_snapshot
from fakestor.control.exports import resume_exports
from fakestor.control.fast_snapshot_restores import submit_fast_restore
from fakestor.control.instances import submit_launch, submit_settle, submit_terminate
from fakestor.control.loaders import load_snapshots, load_volumes
from fakestor.control.modifications import submit_modify
from fakestor.control.recycle_bin import resume_binned
from fakestor.control.recycle_bin_resources import resume_binned_resource
from fakestor.control.snapshot_tiers import submit_tiering
from fakestor.control.snapshot_trash import submit_empty_trash
from fakestor.control.snapshots import submit_copy_snapshot, submit_create_snapshot
from fakestor.control.states import (
    TRANSITIONAL,
    USABLE_VOLUME,
    AttachmentState,
    BinState,
    FastRestoreState,
    InitializationState,
    InstanceState,
    ModificationState,
    SnapshotState,
    TieringState,
    VolumeState,
)
from fakestor.control.volume_copies import submit_copy_volume
from fakestor.control.volume_initializations import submit_initialization
from fakestor.control.volumes import submit_create_volume, submit_delete_volume

log = logging.getLogger(__name__)


def reconcile(*contexts: Ebs) -> list[str]:
    """Compare the records of every region with what the backend finds; repair, and
    report what is not.

    The backend is shared by the regions: data is without a record only if no region
    has one. Returns one line per finding, for the log.
    """
    backend = contexts[0].backend
    inventory = backend.inventory()
    if inventory is None:
        return []
    notes: list[str] = []
    recorded_volumes: set[str] = set()
    recorded_snapshots: set[str] = set()
    host_attached: dict[str, str] = {}
    for ebs in contexts:
        volumes, snapshots = _reconcile_region(ebs, inventory, notes)
        recorded_volumes |= volumes
        recorded_snapshots |= snapshots
        host_attached |= _host_attached(ebs, inventory)
    for volume_id, device in inventory.attached.items():
        if volume_id not in host_attached:
            notes.append(f"{volume_id}: {device} bound with no attachment; detaching")
            submit_release(contexts[0], volume_id)
    for volume_id in sorted(inventory.volumes - recorded_volumes):
        notes.append(f"{volume_id}: data without a record; kept, not served")
    for snapshot_id in sorted(inventory.snapshots - recorded_snapshots):
        notes.append(f"{snapshot_id}: snapshot data without a record; kept, not served")
    for note in notes:
        log.warning("reconcile: %s", note)
    return notes


def _reconcile_region(
    ebs: Ebs, inventory: Inventory, notes: list[str]
) -> tuple[set[str], set[str]]:
    """Mark one region's resources whose data is missing or damaged; returns the ids of
    the volumes and snapshots (trash included) it has records of."""
    with ebs.store.transaction() as db:
        volumes = {volume.id: volume for volume in load_volumes(db, in_recycle_bin=True)}
        snapshots = {
            s.id: s for s in load_snapshots(db, ebs.account_id, others=True, in_recycle_bin=True)
        }
        trash = {row[0] for row in db.execute("SELECT resource_id FROM trash")}
        for volume in volumes.values():
            if volume.state in USABLE_VOLUME and volume.id not in inventory.volumes:
                db.execute(
                    "UPDATE volumes SET state='error', io_enabled=0, status_reason=? WHERE id=?",
                    ("the volume's data is missing from the data dir", volume.id),
                )
                notes.append(f"{volume.id}: data missing; marked 'error'")
        for snapshot in snapshots.values():
            if snapshot.state == SnapshotState.COMPLETED and snapshot.id not in inventory.snapshots:
                db.execute(
                    "UPDATE snapshots SET state='error', state_message=? WHERE id=?",
                    ("the snapshot's data is missing from the data dir", snapshot.id),
                )
                notes.append(f"{snapshot.id}: data missing; marked 'error'")
        for resource_id, damage in sorted(inventory.damaged.items()):
            damaged_volume = volumes.get(resource_id)
            damaged_snapshot = snapshots.get(resource_id)
            if damaged_volume is not None and damaged_volume.state in USABLE_VOLUME:
                # Impaired, as EBS reports a volume whose data may be inconsistent.
                db.execute(
                    "UPDATE volumes SET io_enabled=0, status_reason=? WHERE id=?",
                    (damage, resource_id),
                )
                notes.append(f"{resource_id}: {damage}; I/O disabled, status 'impaired'")
            elif damaged_snapshot is not None and damaged_snapshot.state == SnapshotState.COMPLETED:
                db.execute(
                    "UPDATE snapshots SET state='error', state_message=? WHERE id=?",
                    (damage, resource_id),
                )
                notes.append(f"{resource_id}: {damage}; marked 'error'")
    return set(volumes), set(snapshots) | trash


def _host_attached(ebs: Ebs, inventory: Inventory) -> dict[str, str]:
    """The region's volumes attached to the host, by state; relinks the attached ones."""
    with ebs.store.transaction() as db:
        volumes = load_volumes(db)
    host_attached: dict[str, str] = {}
    for volume in volumes:
        for attachment in volume.attachments:
            if attachment.instance_id == ebs.host_instance_id:
                host_attached[volume.id] = attachment.state
    for volume_id, state in host_attached.items():
        if state == AttachmentState.ATTACHED and volume_id in inventory.volumes:
            # Devices and links do not survive a reboot; bind and link again if needed.
            submit_relink(ebs, volume_id)
    return host_attached


Resumer = Callable[[Ebs, sqlite3.Row], None]


def _resume_volume(ebs: Ebs, row: sqlite3.Row) -> None:
    if row["source_volume_id"]:
        submit_copy_volume(ebs, row["id"], row["source_volume_id"])
    else:
        submit_create_volume(ebs, row["id"], row["snapshot_id"])


def _resume_snapshot(ebs: Ebs, row: sqlite3.Row) -> None:
    if row["owner_id"] is not None:
        return  # the built-in image's root: Regions.start makes it again, right after resume
    if is_direct(ebs, row["id"]):
        resume_direct_snapshot(ebs, row["id"])
    elif row["source_snapshot_id"]:
        submit_copy_snapshot(ebs, row["source_snapshot_id"], row["id"])
    else:
        submit_create_snapshot(ebs, row["id"], row["volume_id"])


# What restarts each transitional state, in the order resume submits them: work that
# reads data first, deletes last (each resource's task queue keeps this order).
RESUMERS: list[tuple[str, StrEnum, Resumer]] = [
    ("volumes", VolumeState.CREATING, _resume_volume),
    # A pass waits for its volume's creation to finish.
    (
        "volume_initializations",
        InitializationState.INITIALIZING,
        lambda e, r: submit_initialization(e, r["volume_id"]),
    ),
    ("snapshots", SnapshotState.PENDING, _resume_snapshot),
    *[
        ("snapshots", state, lambda e, r: resume_binned(e, r["id"], r["state"]))
        for state in (SnapshotState.RECOVERING, SnapshotState.RECOVERABLE)
    ],
    (
        "binned_resources",
        BinState.RECOVERABLE,
        lambda e, r: resume_binned_resource(e, r["kind"], r["resource_id"]),
    ),
    (
        "attachments",
        AttachmentState.ATTACHING,
        lambda e, r: submit_attach(e, r["volume_id"], r["instance_id"]),
    ),
    (
        "attachments",
        AttachmentState.DETACHING,
        lambda e, r: submit_detach(e, r["volume_id"], r["instance_id"]),
    ),
    ("volumes", VolumeState.DELETING, lambda e, r: submit_delete_volume(e, r["id"])),
    ("modifications", ModificationState.MODIFYING, lambda e, r: submit_modify(e, r["volume_id"])),
    ("modifications", ModificationState.OPTIMIZING, lambda e, r: submit_modify(e, r["volume_id"])),
    *[
        ("snapshot_tiers", state, lambda e, r: submit_tiering(e, r["snapshot_id"]))
        for state in (
            TieringState.ARCHIVAL_IN_PROGRESS,
            TieringState.TEMPORARY_RESTORE_IN_PROGRESS,
            TieringState.TEMPORARY_RESTORE_COMPLETED,
            TieringState.PERMANENT_RESTORE_IN_PROGRESS,
        )
    ],
    *[
        (
            "fast_snapshot_restores",
            state,
            lambda e, r: submit_fast_restore(e, r["snapshot_id"], r["zone"]),
        )
        for state in (
            FastRestoreState.ENABLING,
            FastRestoreState.OPTIMIZING,
            FastRestoreState.DISABLING,
        )
    ],
    ("instances", InstanceState.PENDING, lambda e, r: submit_launch(e, r["id"])),
    ("instances", InstanceState.SHUTTING_DOWN, lambda e, r: submit_terminate(e, r["id"])),
    (
        "instances",
        InstanceState.STOPPING,
        lambda e, r: submit_settle(e, r["id"], InstanceState.STOPPING),
    ),
]


def uncovered_states() -> set[tuple[str, str]]:
    """Transitional states no resumer restarts (and resumers of states not transitional)."""
    declared = {(table, state) for table, states in TRANSITIONAL.items() for state in states}
    return declared ^ {(table, state) for table, state, _ in RESUMERS}


if uncovered_states():  # a state added without a resumer would hang after a crash
    raise RuntimeError(f"transitional states and resumers differ: {uncovered_states()}")


def resume(*contexts: Ebs) -> None:
    """Reconcile every region with the backend, then restart every transition left
    unfinished: all regions' work before any trash is emptied, since a copy in one
    region may read a snapshot deleted in another."""
    reconcile(*contexts)
    trash: list[tuple[Ebs, str]] = []
    for ebs in contexts:
        faults.restore_io_faults(ebs)
        with ebs.store.transaction() as db:
            found = [
                (resumer, row)
                for table, state, resumer in RESUMERS
                for row in db.execute(f"SELECT * FROM {table} WHERE state=?", (state,)).fetchall()
            ]
            trash += [(ebs, r["resource_id"]) for r in db.execute("SELECT resource_id FROM trash")]
        for resumer, row in found:
            resumer(ebs, row)
    for ebs, snapshot_id in trash:  # after the restores that read them, queued on the same ids
        submit_empty_trash(ebs, snapshot_id)
    for ebs in contexts:  # the nodes' exports, with the secrets they had
        resume_exports(ebs)
