"""Images (AMIs) as EBS sees them: the root device and block-device mappings a launch
starts from. One built-in image, plus RegisterImage / DescribeImages / DeregisterImage
for images made from a user's snapshots."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime

from fakestor import errors, ids
from fakestor.control import recycle_bin_entry
from fakestor.control.context import HOST_IMAGE_ID, Ebs, check_dry_run
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.loaders import get_snapshot, tags_of
from fakestor.control.requests import DeviceMapping
from fakestor.control.resources import from_text, to_text, to_wire_time, utcnow
from fakestor.control.states import SnapshotState
from fakestor.control.tasks import RetryLater

AMAZON_OWNER_ID = "137112412989"  # the account that owns Amazon's public images
ROOT_DEVICE = "/dev/xvda"
BUILTIN_ROOT_GIB = 8


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    description: str
    root_device_name: str
    mappings: tuple[DeviceMapping, ...]
    owner_id: str
    creation_date: datetime
    owner_alias: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


BUILTIN_IMAGE = Image(
    id=HOST_IMAGE_ID,
    name="fakestor-linux",
    description="fakestor's built-in image: an empty 8 GiB gp3 root volume at /dev/xvda",
    root_device_name=ROOT_DEVICE,
    # The root's SnapshotId is the region's (builtin_root_snapshot_id), set by _all.
    mappings=(
        DeviceMapping(
            ROOT_DEVICE,
            ebs=True,
            volume_size=BUILTIN_ROOT_GIB,
            volume_type="gp3",
            delete_on_termination=True,
        ),
    ),
    owner_id=AMAZON_OWNER_ID,
    creation_date=datetime.fromisoformat("2026-01-01T00:00:00+00:00"),
    owner_alias="amazon",
)

# Launches with no EBS volume at all: the root is instance storage, as on an
# instance-store-backed AMI (EC2's older kind).
INSTANCE_STORE_IMAGE = Image(
    id="ami-00000000000000001",
    name="fakestor-instance-store",
    description="fakestor's built-in instance-store image: no EBS volume at launch",
    root_device_name="/dev/sda1",
    mappings=(DeviceMapping("/dev/sda1", virtual_name="ephemeral0"),),
    owner_id=AMAZON_OWNER_ID,
    creation_date=datetime.fromisoformat("2026-01-01T00:00:00+00:00"),
    owner_alias="amazon",
)

IMAGE_FILTERS = (
    "block-device-mapping.device-name",
    "block-device-mapping.snapshot-id",
    "block-device-mapping.volume-size",
    "block-device-mapping.volume-type",
    "creation-date",
    "description",
    "image-id",
    "image-type",
    "is-public",
    "name",
    "owner-alias",
    "owner-id",
    "root-device-name",
    "root-device-type",
    "state",
)


def _from_row(row: dict[str, str]) -> Image:
    return Image(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        root_device_name=row["root_device_name"],
        mappings=tuple(DeviceMapping(**m) for m in json.loads(row["mappings"])),
        owner_id=row["owner_id"],
        creation_date=from_text(row["create_time"]),
    )


def builtin_root_snapshot_id(region: str) -> str:
    """The snapshot behind the built-in image's root in `region` (an AMI's snapshots are
    regional, so each region has its own), the same on every run."""
    return ids.stable_id(ids.SNAPSHOT, f"{HOST_IMAGE_ID}/{region}/root")


def builtin_image(region: str) -> Image:
    root = replace(BUILTIN_IMAGE.mappings[0], snapshot_id=builtin_root_snapshot_id(region))
    return replace(BUILTIN_IMAGE, mappings=(root,))


def ensure_builtin_root_snapshot(ebs: Ebs) -> None:
    """Make the built-in image's root snapshot in this region's state store, if missing:
    an empty 8 GiB snapshot written through the backend. Idempotent; a run interrupted
    half-way (recorded `pending`, or `error` from missing data) is done again.

    The snapshot is Amazon's, not the account's, as the snapshots behind Amazon's public
    AMIs are: they are not shared with the accounts that launch the AMI, so DescribeSnapshots
    (by default, with Owners self or amazon, or by id) does not show it to the account and
    CreateVolume cannot restore it; only launches of the image do. (EC2 documents no rule for
    this; the choice follows how Amazon's own AMIs behave.)
    """
    snapshot_id = builtin_root_snapshot_id(ebs.region.name)
    with ebs.store.transaction() as db:
        row = db.execute("SELECT state FROM snapshots WHERE id=?", (snapshot_id,)).fetchone()
        if row is not None and row["state"] == SnapshotState.COMPLETED:
            return
        db.execute(
            "INSERT OR REPLACE INTO snapshots(id, volume_id, volume_size, state, progress, "
            "start_time, description, encrypted, kms_key_id, owner_id) "
            "VALUES (?, 'vol-ffffffff', ?, ?, 0, ?, ?, 0, NULL, ?)",
            (
                snapshot_id,
                BUILTIN_ROOT_GIB,
                SnapshotState.PENDING,
                to_text(BUILTIN_IMAGE.creation_date),
                f"Root of {BUILTIN_IMAGE.id} ({BUILTIN_IMAGE.name})",
                AMAZON_OWNER_ID,
            ),
        )
    ebs.backend.start_snapshot_data(snapshot_id, BUILTIN_ROOT_GIB, None)
    ebs.backend.complete_snapshot_data(snapshot_id)
    with ebs.store.transaction() as db:
        db.execute(
            f"UPDATE snapshots SET state='{SnapshotState.COMPLETED}', progress=100, "
            "completion_time=?, state_message=NULL WHERE id=?",
            (to_text(BUILTIN_IMAGE.creation_date), snapshot_id),
        )


def _all(ebs: Ebs, *, in_recycle_bin: bool = False) -> list[Image]:
    """Every image; those in the Recycle Bin only if `in_recycle_bin` (to every other use
    they do not exist until restored)."""
    with ebs.store.transaction() as db:
        rows = [dict(row) for row in db.execute("SELECT * FROM images ORDER BY create_time")]
        binned = recycle_bin_entry.binned_ids(db, recycle_bin_entry.IMAGE)
        tags = tags_of(db, "image")
    if not in_recycle_bin:
        rows = [row for row in rows if row["id"] not in binned]
    # Tags an account puts on Amazon's images are its own, as on EC2.
    found = [builtin_image(ebs.region.name), INSTANCE_STORE_IMAGE, *map(_from_row, rows)]
    return [replace(image, tags=tags.get(image.id, {})) for image in found]


def get_image(ebs: Ebs, image_id: str, *, in_recycle_bin: bool = False) -> Image:
    """The image, or InvalidAMIID.Malformed / InvalidAMIID.NotFound as EC2 answers."""
    if ids.kind_of(image_id) != ids.IMAGE:
        raise errors.InvalidAmiIdMalformed(image_id)
    for image in _all(ebs, in_recycle_bin=in_recycle_bin):
        if image.id == image_id:
            return image
    raise errors.InvalidAmiIdNotFound(image_id)


def root_device_type(root_device_name: str, mappings: Sequence[DeviceMapping]) -> str:
    """ "ebs", or "instance-store" where the root device is instance storage."""
    ephemeral = {m.device_name for m in mappings if m.virtual_name}
    return "instance-store" if root_device_name in ephemeral else "ebs"


def _values(image: Image) -> dict[str, list[str]]:
    ebs_mappings = [m for m in image.mappings if m.ebs]
    return {
        "block-device-mapping.device-name": [m.device_name for m in image.mappings],
        "block-device-mapping.snapshot-id": [m.snapshot_id for m in ebs_mappings if m.snapshot_id],
        "block-device-mapping.volume-size": [str(m.volume_size) for m in ebs_mappings],
        "block-device-mapping.volume-type": [m.volume_type or "gp3" for m in ebs_mappings],
        "creation-date": [to_wire_time(image.creation_date)],
        "description": [image.description],
        "image-id": [image.id],
        "image-type": ["machine"],
        "is-public": ["true" if image.owner_alias == "amazon" else "false"],
        "name": [image.name],
        "owner-alias": [image.owner_alias] if image.owner_alias else [],
        "owner-id": [image.owner_id],
        "root-device-name": [image.root_device_name],
        "root-device-type": [root_device_type(image.root_device_name, image.mappings)],
        "state": ["available"],
    }


def describe_images(
    ebs: Ebs,
    *,
    image_ids: Sequence[str] = (),
    owners: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[Image]:
    check_filters(filters, IMAGE_FILTERS)
    found = [get_image(ebs, image_id) for image_id in image_ids] if image_ids else _all(ebs)
    check_dry_run(dry_run)
    if owners:
        wanted = {ebs.account_id if owner == "self" else owner for owner in owners}
        found = [i for i in found if i.owner_id in wanted or i.owner_alias in wanted]
    return [image for image in found if matches(_values(image), filters)]


def register_image(
    ebs: Ebs,
    name: str,
    root_device_name: str,
    mappings: Sequence[DeviceMapping],
    *,
    description: str = "",
    dry_run: bool = False,
) -> Image:
    """An image whose root volume is restored from a snapshot of the user's."""
    if not 3 <= len(name) <= 128:
        raise errors.InvalidParameterValue(
            f"AMI name '{name}' is invalid: it must be 3 to 128 characters long."
        )
    root = next((m for m in mappings if m.device_name == root_device_name), None)
    if root is None or not root.ebs or root.snapshot_id is None:
        raise errors.InvalidParameterValue(
            f"The root device {root_device_name} needs a block-device mapping with a "
            "snapshot (Ebs.SnapshotId) to register an EBS-backed image."
        )
    with ebs.store.transaction() as db:
        if db.execute("SELECT 1 FROM images WHERE name=?", (name,)).fetchone():
            raise errors.InvalidAmiNameDuplicate(name)
        for mapping in mappings:
            if mapping.ebs and mapping.snapshot_id is not None:
                snapshot = get_snapshot(db, ebs.account_id, mapping.snapshot_id)
                if snapshot.state != SnapshotState.COMPLETED:
                    raise errors.IncorrectState(
                        f"Snapshot '{snapshot.id}' is in invalid state - {snapshot.state}"
                    )
        check_dry_run(dry_run)
        image_id = ids.new_id(ids.IMAGE)
        db.execute(
            "INSERT INTO images(id, name, description, root_device_name, mappings, owner_id, "
            "create_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                image_id,
                name,
                description,
                root_device_name,
                json.dumps([asdict(m) for m in mappings]),
                ebs.account_id,
                to_text(utcnow()),
            ),
        )
    return get_image(ebs, image_id)


def deregister_image(ebs: Ebs, image_id: str, *, dry_run: bool = False) -> None:
    image = get_image(ebs, image_id)
    if image.owner_id != ebs.account_id:
        raise errors.UnauthorizedOperation()
    check_dry_run(dry_run)
    with ebs.store.transaction() as db:
        # Its snapshots are not binned with it (AWS's rules retain them on their own).
        retained = recycle_bin_entry.retain(ebs, db, recycle_bin_entry.IMAGE, image_id, image.tags)
        if not retained:
            remove_image(db, image_id)
    if retained:
        submit_image_purge(ebs, image_id)


def remove_image(db: sqlite3.Connection, image_id: str) -> None:
    db.execute("DELETE FROM tags WHERE resource_id=?", (image_id,))
    db.execute("DELETE FROM images WHERE id=?", (image_id,))


def submit_image_purge(ebs: Ebs, image_id: str) -> None:
    """Delete an image in the Recycle Bin for good when its retention ends; restored
    meanwhile, it stays. Its snapshots are left as they are."""

    def work() -> None:
        with ebs.store.transaction() as db:
            wait = recycle_bin_entry.expire(db, recycle_bin_entry.IMAGE, image_id)
            if wait == 0:
                remove_image(db, image_id)
        if wait:
            raise RetryLater(wait)  # waits on a timer, not in a worker

    ebs.tasks.submit([image_id], work, f"recycle bin retention of {image_id}")
