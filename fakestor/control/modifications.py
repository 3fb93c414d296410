"""ModifyVolume and DescribeVolumesModifications, and the task that applies a change."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import timedelta

from backends import BackendError
from fakestor import errors
from fakestor.control import faults, rules, server_faults
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filter_values import (
    MODIFICATION_FILTERS,
    modification_filter_values,
)
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.loaders import get_volume, load_modifications
from fakestor.control.requests import (
    VolumeChange,
)
from fakestor.control.resources import (
    Modification,
    from_text,
    to_text,
    utcnow,
)
from fakestor.control.states import (
    USABLE_VOLUME,
    ModificationState,
)
from fakestor.control.tasks import RetryLater
from fakestor.control.volumes import check_capacity

log = logging.getLogger(__name__)

MODIFICATIONS_PER_DAY = 4  # ModifyVolume: "up to four times within a rolling 24-hour period"
MODIFICATION_WINDOW = timedelta(hours=24)


def modify_volume(
    ebs: Ebs, volume_id: str, change: VolumeChange, *, dry_run: bool = False
) -> Modification:
    with ebs.store.transaction() as db:
        volume = get_volume(db, volume_id)
        if volume.state not in USABLE_VOLUME:
            raise errors.IncorrectState(
                f"Volume '{volume_id}' is in the '{volume.state}' state and cannot be modified."
            )
        current = next((m for m in load_modifications(db) if m.volume_id == volume_id), None)
        if current is not None and current.state in (
            ModificationState.MODIFYING,
            ModificationState.OPTIMIZING,
        ):
            raise errors.IncorrectModificationState(
                f"Volume {volume_id} is already being modified (state "
                f"'{current.state}'); wait until the modification completes."
            )
        target_type = change.volume_type or volume.volume_type
        target_size = change.size if change.size is not None else volume.size
        if target_size < volume.size:
            raise errors.InvalidParameterValue(
                f"New size {target_size}GiB is smaller than the volume's current size "
                f"{volume.size}GiB; EBS volumes can only grow."
            )
        same_type = target_type == volume.volume_type
        iops = change.iops
        target_rules = rules.volume_type_rules(target_type)
        if iops is None and target_rules.min_iops:
            # Kept if the type stays; 3,000 when changing to gp3, io1 or io2.
            iops = volume.iops if same_type else rules.MODIFY_DEFAULT_IOPS
        throughput = change.throughput
        if throughput is None and same_type and target_type == "gp3":
            throughput = volume.throughput
        multi_attach = (
            change.multi_attach if change.multi_attach is not None else volume.multi_attach
        )
        if multi_attach != volume.multi_attach and volume.attachments:
            raise errors.IncorrectState(
                f"Multi-Attach can be changed only while {volume_id} is detached."
            )
        if volume.multi_attach:
            # EBS: the type of a Multi-Attach volume stays; io1 keeps its size and IOPS too.
            if target_type != volume.volume_type:
                raise errors.InvalidParameterValue(
                    f"Volume {volume_id} has Multi-Attach enabled; its volume type cannot "
                    "be modified."
                )
            if volume.volume_type == "io1" and (
                target_size != volume.size or (iops is not None and iops != volume.iops)
            ):
                raise errors.InvalidParameterValue(
                    f"Volume {volume_id} is an io1 volume with Multi-Attach enabled; its "
                    "size and IOPS cannot be modified."
                )
        performance = rules.check_volume_config(
            target_type, target_size, iops, throughput, multi_attach
        )
        check_capacity(ebs, target_size)
        server_faults.check_capacity(ebs, volume.zone, target_type)
        if (
            target_size == volume.size
            and target_type == volume.volume_type
            and performance.iops == volume.iops
            and performance.throughput == volume.throughput
            and multi_attach == volume.multi_attach
        ):
            raise errors.InvalidParameterValue(
                f"The modification would not change volume {volume_id}; give a new size, "
                "type, IOPS, throughput or Multi-Attach setting."
            )
        check_modification_rate(db, volume_id)
        check_dry_run(dry_run)
        seq = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM modifications WHERE volume_id=?",
            (volume_id,),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO modifications(volume_id, seq, state, progress, start_time, "
            "original_size, original_type, original_iops, original_throughput, "
            "original_multi_attach, target_size, target_type, target_iops, "
            "target_throughput, target_multi_attach, fault) "
            f"VALUES (?, ?, '{ModificationState.MODIFYING}', 0, "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                volume_id,
                seq,
                to_text(utcnow()),
                volume.size,
                volume.volume_type,
                volume.iops,
                volume.throughput,
                int(volume.multi_attach),
                target_size,
                target_type,
                performance.iops,
                performance.throughput,
                int(multi_attach),
                faults.tag_value(db, volume_id, faults.MODIFY),
            ),
        )
        modification = next(m for m in load_modifications(db) if m.volume_id == volume_id)
    submit_modify(ebs, volume_id)
    return modification


def submit_modify(ebs: Ebs, volume_id: str) -> None:
    def set_state(state: str, progress: int, message: str | None = None) -> None:
        with ebs.store.transaction() as db:
            db.execute(
                "UPDATE modifications SET state=?, progress=?, status_message=?, "
                "end_time=CASE WHEN ? IN "
                f"('{ModificationState.COMPLETED}','{ModificationState.FAILED}') THEN ? END "
                "WHERE volume_id=? AND seq=(SELECT MAX(seq) FROM modifications "
                "WHERE volume_id=?)",
                (state, progress, message, state, to_text(utcnow()), volume_id, volume_id),
            )

    def work() -> None:
        with ebs.store.transaction() as db:
            modification = next(
                (m for m in load_modifications(db) if m.volume_id == volume_id), None
            )
        if modification is None or modification.state not in (
            ModificationState.MODIFYING,
            ModificationState.OPTIMIZING,
        ):
            return
        if modification.state == ModificationState.MODIFYING:
            if modification.target_size > modification.original_size:
                try:
                    ebs.backend.resize_volume(volume_id, modification.target_size)
                except BackendError as failure:
                    set_state(ModificationState.FAILED, 0, str(failure))
                    return
            with ebs.store.transaction() as db:
                db.execute(
                    "UPDATE volumes SET size=?, volume_type=?, iops=?, throughput=?, "
                    "multi_attach=? WHERE id=?",
                    (
                        modification.target_size,
                        modification.target_type,
                        modification.target_iops,
                        modification.target_throughput,
                        int(modification.target_multi_attach),
                        volume_id,
                    ),
                )
            set_state(ModificationState.OPTIMIZING, 50)
        # Optimizing is EBS rebalancing data in the background; the new size is usable.
        wait = ebs.backend.latency
        if wait and not ebs.tasks.sleep(wait):
            return
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT start_time, fault FROM modifications WHERE volume_id=? "
                "ORDER BY seq DESC LIMIT 1",
                (volume_id,),
            ).fetchone()
        held = faults.modify_wait(ebs, volume_id, row["start_time"], row["fault"])
        if held is not None:  # the fault keeps it optimizing; look again soon
            raise RetryLater(min(held, faults.POLL_SECONDS))
        set_state(ModificationState.COMPLETED, 100)

    ebs.tasks.submit(
        [volume_id],
        work,
        f"modify {volume_id}",
        on_failure=lambda failure: set_state(ModificationState.FAILED, 0, str(failure)),
    )


def describe_volumes_modifications(
    ebs: Ebs,
    *,
    volume_ids: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[Modification]:
    check_filters(filters, MODIFICATION_FILTERS)
    with ebs.store.transaction() as db:
        for volume_id in volume_ids:
            get_volume(db, volume_id)
        found = load_modifications(db)
    check_dry_run(dry_run)
    if volume_ids:
        found = [m for m in found if m.volume_id in volume_ids]
        modified = {m.volume_id for m in found}
        for volume_id in volume_ids:
            if volume_id not in modified:
                raise errors.InvalidVolumeModificationNotFound(volume_id)
    return [m for m in found if matches(modification_filter_values(m), filters)]


def check_modification_rate(db: sqlite3.Connection, volume_id: str) -> None:
    """EBS: at most MODIFICATIONS_PER_DAY modifications of a volume in a rolling 24 hours."""
    window_start = utcnow() - MODIFICATION_WINDOW
    recent = sorted(
        from_text(row["start_time"])
        for row in db.execute(
            "SELECT start_time FROM modifications WHERE volume_id=?", (volume_id,)
        )
        if from_text(row["start_time"]) > window_start
    )
    if len(recent) >= MODIFICATIONS_PER_DAY:
        next_allowed = recent[-MODIFICATIONS_PER_DAY] + MODIFICATION_WINDOW
        raise errors.VolumeModificationRateExceeded(
            f"You've reached the maximum modification rate per volume limit: "
            f"{MODIFICATIONS_PER_DAY} modifications in 24 hours. Volume {volume_id} can be "
            f"modified again after {to_text(next_allowed)}."
        )
