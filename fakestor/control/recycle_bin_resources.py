"""The EC2 side of the Recycle Bin for volumes and images: ListVolumesInRecycleBin,
RestoreVolumeFromRecycleBin, ListImagesInRecycleBin, RestoreImageFromRecycleBin, and the
purges resumed after a restart (DeleteVolume and DeregisterImage put them in the bin:
recycle_bin_entry.py).

A restored volume or image is available at once, as AWS documents ("immediately available
for use"); a volume keeps its data, tags and initialization, an image its mappings and tags.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fakestor import errors, ids
from fakestor.control import recycle_bin_entry
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.images import Image, get_image, submit_image_purge
from fakestor.control.loaders import load_snapshots, load_volumes
from fakestor.control.resources import Volume, from_text
from fakestor.control.states import SnapshotState
from fakestor.control.volumes import submit_volume_purge

VOLUME, IMAGE = recycle_bin_entry.VOLUME, recycle_bin_entry.IMAGE


@dataclass(frozen=True)
class BinTimes:
    enter_time: datetime
    exit_time: datetime


def _times(db: sqlite3.Connection, kind: str) -> dict[str, BinTimes]:
    rows = db.execute(
        "SELECT resource_id, enter_time, exit_time FROM binned_resources WHERE kind=? "
        "ORDER BY enter_time, resource_id",
        (kind,),
    )
    return {
        row["resource_id"]: BinTimes(from_text(row["enter_time"]), from_text(row["exit_time"]))
        for row in rows
    }


def _leave(db: sqlite3.Connection, kind: str, resource_id: str) -> bool:
    """Take a resource out of the bin; False if it was not in it."""
    cursor = db.execute(
        "DELETE FROM binned_resources WHERE kind=? AND resource_id=?", (kind, resource_id)
    )
    return cursor.rowcount > 0


def list_volumes_in_recycle_bin(
    ebs: Ebs, *, volume_ids: Sequence[str] = (), dry_run: bool = False
) -> list[tuple[Volume, BinTimes]]:
    """The volumes in the bin, or those of `volume_ids` that are (an id that is not in the
    bin is left out, as for snapshots: AWS documents no error for it)."""
    for volume_id in volume_ids:
        ids.check(ids.VOLUME, volume_id)
    with ebs.store.transaction() as db:
        times = _times(db, VOLUME)
        wanted = [v for v in volume_ids if v in times] if volume_ids else list(times)
        volumes = {v.id: v for v in load_volumes(db, wanted, in_recycle_bin=True)}
    check_dry_run(dry_run)
    return [(volumes[v], times[v]) for v in wanted if v in volumes]


def restore_volume_from_recycle_bin(ebs: Ebs, volume_id: str, *, dry_run: bool = False) -> None:
    """Take a volume out of the bin: `available` at once, with its data and tags.

    An id that is not in the bin (unknown, or a volume not deleted) is InvalidVolume.NotFound,
    as for RestoreSnapshotFromRecycleBin; AWS documents no other code for it."""
    ids.check(ids.VOLUME, volume_id)
    with ebs.store.transaction() as db:
        if volume_id not in recycle_bin_entry.binned_ids(db, VOLUME):
            raise errors.InvalidVolumeNotFound(volume_id)
        check_dry_run(dry_run)
        _leave(db, VOLUME, volume_id)


def list_images_in_recycle_bin(
    ebs: Ebs, *, image_ids: Sequence[str] = (), dry_run: bool = False
) -> list[tuple[Image, BinTimes]]:
    """The images in the bin, or those of `image_ids` that are (up to 20 ids, as AWS says)."""
    if len(image_ids) > 20:
        raise errors.InvalidParameterValue(
            f"ImageIds takes at most 20 image IDs, not {len(image_ids)}."
        )  # AWS documents the limit, not the wording
    for image_id in image_ids:
        if ids.kind_of(image_id) != ids.IMAGE:
            raise errors.InvalidAmiIdMalformed(image_id)
    with ebs.store.transaction() as db:
        times = _times(db, IMAGE)
    check_dry_run(dry_run)
    wanted = [i for i in image_ids if i in times] if image_ids else list(times)
    return [(get_image(ebs, image_id, in_recycle_bin=True), times[image_id]) for image_id in wanted]


def restore_image_from_recycle_bin(ebs: Ebs, image_id: str, *, dry_run: bool = False) -> None:
    """Take an image out of the bin: usable at once, once every snapshot it maps is
    restored (AWS: "you must first restore all of its associated snapshots"); an image
    whose snapshot has been deleted for good cannot be restored."""
    if ids.kind_of(image_id) != ids.IMAGE:
        raise errors.InvalidAmiIdMalformed(image_id)
    image = get_image(ebs, image_id, in_recycle_bin=True)
    with ebs.store.transaction() as db:
        if image_id not in recycle_bin_entry.binned_ids(db, IMAGE):
            raise errors.InvalidAmiIdNotFound(image_id)
        wanted = [m.snapshot_id for m in image.mappings if m.ebs and m.snapshot_id]
        found = {s.id: s for s in load_snapshots(db, ebs.account_id, wanted, in_recycle_bin=True)}
        for snapshot_id in wanted:
            snapshot = found.get(snapshot_id)
            if snapshot is None:
                raise errors.InvalidSnapshotNotFound(snapshot_id)
            if snapshot.state != SnapshotState.COMPLETED:
                # AWS documents the rule, not the code or wording: these are fakestor's.
                raise errors.IncorrectState(
                    f"Snapshot '{snapshot_id}' of image '{image_id}' is '{snapshot.state}'; "
                    "restore it from the Recycle Bin and wait until it is 'completed' first."
                )
        check_dry_run(dry_run)
        _leave(db, IMAGE, image_id)


def resume_binned_resource(ebs: Ebs, kind: str, resource_id: str) -> None:
    """After a restart: the purge timer of a volume or image in the bin goes on."""
    if kind == VOLUME:
        submit_volume_purge(ebs, resource_id)
    else:
        submit_image_purge(ebs, resource_id)
