"""CopyVolumes: a crash-consistent, point-in-time copy of a volume in its own zone, made by
the backend (a mounted filesystem frozen meanwhile), then initialized as a volume copy."""

from __future__ import annotations

from backends import BackendError
from fakestor import errors
from fakestor.control import idempotency, kms_keys, rules, volume_initializations
from fakestor.control.account import resolve_encryption
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.loaders import get_volume, load_volumes
from fakestor.control.requests import VolumeCopyRequest
from fakestor.control.resources import Volume
from fakestor.control.states import USABLE_VOLUME, VolumeState
from fakestor.control.tags import tags_for
from fakestor.control.volumes import (
    NewVolume,
    check_capacity,
    insert_volume,
    set_volume_state,
    vanish_volume,
)


def copy_volumes(
    ebs: Ebs,
    request: VolumeCopyRequest,
    *,
    client_token: idempotency.ClientToken | None = None,
    dry_run: bool = False,
) -> Volume:
    """Record the copy `creating` and start the backend's copy; returns the new volume."""
    tags = tags_for(request.tag_specs, "volume")
    with ebs.store.transaction() as db:
        source = get_volume(db, request.source_volume_id)
        # Zonal, as CreateVolume: the copy is made in the source's zone.
        earlier = idempotency.replay(
            db, idempotency.COPY_VOLUMES, client_token, source.zone, dry_run=dry_run
        )
        if earlier is not None:
            return idempotency.still_there(load_volumes(db, [earlier]))[0]
        if source.state not in USABLE_VOLUME:
            raise errors.IncorrectState(
                f"Volume '{source.id}' is in the '{source.state}' state; copy an "
                f"'{VolumeState.AVAILABLE}' or '{VolumeState.IN_USE}' volume."
            )
        size = source.size if request.size is None else request.size
        if size < source.size:
            raise errors.InvalidParameterValue(
                f"Volume of {size}GiB is too small; minimum is {source.size}GiB "
                f"(the size of {source.id})."
            )
        # The model: "If not specified, the volume type defaults to gp2", as CreateVolume.
        volume_type = request.volume_type or rules.DEFAULT_VOLUME_TYPE
        # "If the source volume is encrypted, the service always encrypts the copy
        # regardless of this value", with the source's key unless another is named.
        encrypted, kms_key_id = resolve_encryption(
            ebs,
            True if source.encrypted else request.encrypted,
            request.kms_key_id or (source.kms_key_id if source.encrypted else None),
            None,
            "the volume copy",
        )
        performance = rules.check_volume_config(
            volume_type, size, request.iops, request.throughput, request.multi_attach
        )
        check_capacity(ebs, size)
        check_dry_run(dry_run)
        new = NewVolume(
            size, volume_type, performance, source.zone, None, encrypted, kms_key_id,
            request.multi_attach,
        )  # fmt: skip
        volume_id = insert_volume(db, new, tags)
        db.execute("UPDATE volumes SET source_volume_id=? WHERE id=?", (source.id, volume_id))
        volume_initializations.begin_copy(db, volume_id)
        idempotency.record(db, idempotency.COPY_VOLUMES, client_token, source.zone, volume_id)
        volume = get_volume(db, volume_id)
    submit_copy_volume(ebs, volume_id, source.id)
    volume_initializations.submit_initialization(ebs, volume_id)
    return volume


def submit_copy_volume(ebs: Ebs, volume_id: str, source_volume_id: str) -> None:
    """Copy the source's data into the new volume, then make it `available`."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT size, state, encrypted, kms_key_id FROM volumes WHERE id=?", (volume_id,)
            ).fetchone()
        if row is None or row["state"] != VolumeState.CREATING:
            return
        if row["encrypted"] and row["kms_key_id"]:
            unusable = kms_keys.unusable_for_ebs(ebs, row["kms_key_id"])
            if unusable is not None:
                # EC2's answer for a copy is not documented; fakestor's is CreateVolume's.
                vanish_volume(ebs, volume_id, unusable)
                return
        try:
            ebs.backend.copy_volume(source_volume_id, volume_id, row["size"])
        except BackendError as failure:
            set_volume_state(ebs, volume_id, VolumeState.ERROR, reason=str(failure))
            return
        set_volume_state(ebs, volume_id, VolumeState.AVAILABLE)

    def failed(failure: Exception) -> None:
        set_volume_state(ebs, volume_id, VolumeState.ERROR, reason=f"copy failed: {failure}")

    # Keyed on the source too: its delete, detach or snapshot waits for the copy.
    ebs.tasks.submit(
        [volume_id, source_volume_id], work, f"copy {source_volume_id}", on_failure=failed
    )
