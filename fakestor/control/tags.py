"""Tags: the rules for keys and values, and Create/Delete/DescribeTags."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from fakestor import errors, ids
from fakestor.control import faults, performance_model
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filter_values import TAG_FILTERS
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.images import get_image
from fakestor.control.loaders import (
    get_instance,
    get_snapshot,
    get_volume,
    load_snapshots,
    load_volumes,
)
from fakestor.control.requests import TagSpec
from fakestor.control.resources import Tag

MAX_TAGS_PER_RESOURCE = 50
_RESOURCE_TYPES = {
    ids.VOLUME: "volume",
    ids.SNAPSHOT: "snapshot",
    ids.INSTANCE: "instance",
    ids.IMAGE: "image",
}


def check_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key or len(key) > 128:
            raise errors.InvalidParameterValue(
                f"Tag key '{key[:140]}' must be 1 to 128 characters long."
            )
        if key.lower().startswith("aws:"):
            raise errors.InvalidParameterValue(
                f"Tag key '{key}' is reserved: keys starting with 'aws:' are for AWS use."
            )
        if len(value) > 256:
            raise errors.InvalidParameterValue(
                f"Tag value for key '{key}' is longer than 256 characters."
            )


def tags_for(
    specs: Sequence[TagSpec], resource_type: str, also: Sequence[str] = ()
) -> dict[str, str]:
    """The tags the specs give resources of `resource_type`; specs for the types in `also`
    (the other resources the request creates) are allowed and left out."""
    tags: dict[str, str] = {}
    for spec in specs:
        if spec.resource_type != resource_type and spec.resource_type not in also:
            valid = "', '".join([resource_type, *also])
            raise errors.InvalidParameterValue(
                f"'{spec.resource_type}' is not a valid taggable resource type for this "
                f"operation; use '{valid}'."
            )
        if spec.resource_type == resource_type:
            tags.update(spec.tags)
    check_tags(tags)
    faults.check_fault_tags(resource_type, tags)
    if len(tags) > MAX_TAGS_PER_RESOURCE:
        raise errors.TagLimitExceeded(
            f"The maximum number of tags ({MAX_TAGS_PER_RESOURCE}) per resource was exceeded."
        )
    return tags


def set_tags(
    db: sqlite3.Connection, resource_id: str, resource_type: str, tags: Mapping[str, str]
) -> None:
    db.executemany(
        "INSERT INTO tags(resource_id, resource_type, key, value) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(resource_id, key) DO UPDATE SET value=excluded.value",
        [(resource_id, resource_type, key, value) for key, value in tags.items()],
    )
    count = db.execute("SELECT COUNT(*) FROM tags WHERE resource_id=?", (resource_id,)).fetchone()[
        0
    ]
    if count > MAX_TAGS_PER_RESOURCE:
        raise errors.TagLimitExceeded(
            f"The maximum number of tags ({MAX_TAGS_PER_RESOURCE}) for resource "
            f"{resource_id} was exceeded."
        )


def type_of_resource(ebs: Ebs, db: sqlite3.Connection, resource_id: str) -> str:
    kind = ids.kind_of(resource_id)
    if kind is None or kind not in _RESOURCE_TYPES:
        raise errors.InvalidId(resource_id)
    if kind == ids.VOLUME:
        # A volume in the Recycle Bin can still be tagged, as on EC2.
        if not load_volumes(db, [resource_id], in_recycle_bin=True):
            get_volume(db, resource_id)  # InvalidVolume.NotFound
    elif kind == ids.IMAGE:
        get_image(ebs, resource_id, in_recycle_bin=True)  # so can an image in the bin
    elif kind == ids.SNAPSHOT:
        # A snapshot in the Recycle Bin can still be tagged, as on EC2.
        if not load_snapshots(db, ebs.account_id, [resource_id], in_recycle_bin=True):
            get_snapshot(db, ebs.account_id, resource_id)  # InvalidSnapshot.NotFound
    else:
        get_instance(db, resource_id)
    return _RESOURCE_TYPES[kind]


def create_tags(
    ebs: Ebs, resource_ids: Sequence[str], tags: Mapping[str, str], *, dry_run: bool = False
) -> None:
    if not resource_ids:
        raise errors.MissingParameter("ResourceId")
    check_tags(tags)
    for key, value in tags.items():
        problem = performance_model.check_tag_value(key, value)
        if problem:
            raise errors.InvalidParameterValue(problem)
    with ebs.store.transaction() as db:
        types = {rid: type_of_resource(ebs, db, rid) for rid in resource_ids}
        for resource_type in set(types.values()):
            faults.check_fault_tags(resource_type, tags)
        check_dry_run(dry_run)
        before = faults.io_values(db, resource_ids)
        for resource_id, resource_type in types.items():
            set_tags(db, resource_id, resource_type, tags)
        changed = faults.record_io_changes(db, before)
    faults.apply_io_faults(ebs, changed)
    if performance_model.TAG in tags:
        _apply_performance(ebs, [rid for rid, kind in types.items() if kind == "volume"])


def delete_tags(
    ebs: Ebs,
    resource_ids: Sequence[str],
    tags: Sequence[tuple[str, str | None]],
    *,
    dry_run: bool = False,
) -> None:
    """Delete tags; a None value deletes the key whatever its value, no tags deletes all."""
    if not resource_ids:
        raise errors.MissingParameter("ResourceId")
    with ebs.store.transaction() as db:
        for resource_id in resource_ids:
            type_of_resource(ebs, db, resource_id)
        check_dry_run(dry_run)
        before = faults.io_values(db, resource_ids)
        for resource_id in resource_ids:
            if not tags:
                db.execute("DELETE FROM tags WHERE resource_id=?", (resource_id,))
            for key, value in tags:
                if value is None:
                    db.execute("DELETE FROM tags WHERE resource_id=? AND key=?", (resource_id, key))
                else:
                    db.execute(
                        "DELETE FROM tags WHERE resource_id=? AND key=? AND value=?",
                        (resource_id, key, value),
                    )
        changed = faults.record_io_changes(db, before)
    faults.apply_io_faults(ebs, changed)
    if not tags or any(key == performance_model.TAG for key, _ in tags):
        _apply_performance(ebs, [rid for rid in resource_ids if rid.startswith("vol-")])


def _apply_performance(ebs: Ebs, volume_ids: Sequence[str]) -> None:
    """The performance model tag changed: the volumes' data path follows at once."""
    for volume_id in volume_ids:
        performance_model.apply(ebs, volume_id)


def describe_tags(ebs: Ebs, *, filters: Sequence[Filter] = (), dry_run: bool = False) -> list[Tag]:
    check_filters(filters, TAG_FILTERS)
    check_dry_run(dry_run)
    with ebs.store.transaction() as db:
        rows = db.execute("SELECT * FROM tags").fetchall()
    found = [Tag(r["resource_id"], r["resource_type"], r["key"], r["value"]) for r in rows]
    return [
        tag
        for tag in found
        if matches(
            {
                "resource-id": [tag.resource_id],
                "resource-type": [tag.resource_type],
                "key": [tag.key],
                "value": [tag.value],
                f"tag:{tag.key}": [tag.value],
            },
            filters,
        )
    ]
