"""The states of each resource, as EC2 names them, and which of them are transitional.

A transitional state is one a background task leaves; after a crash the server
resumes every resource found in one (see reconcile.resume), so the set is declared
here once, next to the states.
"""

from __future__ import annotations

from enum import StrEnum


class VolumeState(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    IN_USE = "in-use"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


class AttachmentState(StrEnum):
    ATTACHING = "attaching"
    ATTACHED = "attached"
    DETACHING = "detaching"
    DETACHED = "detached"


class SnapshotState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    ERROR = "error"
    RECOVERABLE = "recoverable"  # in the Recycle Bin
    RECOVERING = "recovering"  # being restored from it


class BinState(StrEnum):
    """A volume or image in the Recycle Bin: left by the task that purges it."""

    RECOVERABLE = "recoverable"


class LockState(StrEnum):
    COMPLIANCE_COOLOFF = "compliance-cooloff"
    GOVERNANCE = "governance"
    COMPLIANCE = "compliance"
    EXPIRED = "expired"


class TieringState(StrEnum):
    """A snapshot's last tiering operation (TieringOperationStatus)."""

    ARCHIVAL_IN_PROGRESS = "archival-in-progress"
    ARCHIVAL_COMPLETED = "archival-completed"
    ARCHIVAL_FAILED = "archival-failed"
    TEMPORARY_RESTORE_IN_PROGRESS = "temporary-restore-in-progress"
    TEMPORARY_RESTORE_COMPLETED = "temporary-restore-completed"
    TEMPORARY_RESTORE_FAILED = "temporary-restore-failed"
    PERMANENT_RESTORE_IN_PROGRESS = "permanent-restore-in-progress"
    PERMANENT_RESTORE_COMPLETED = "permanent-restore-completed"
    PERMANENT_RESTORE_FAILED = "permanent-restore-failed"


class FastRestoreState(StrEnum):
    ENABLING = "enabling"
    OPTIMIZING = "optimizing"
    ENABLED = "enabled"
    DISABLING = "disabling"
    DISABLED = "disabled"


class ModificationState(StrEnum):
    MODIFYING = "modifying"
    OPTIMIZING = "optimizing"
    COMPLETED = "completed"
    FAILED = "failed"


class InitializationState(StrEnum):
    """A new volume's initialization (VolumeStatus detail `initialization-state`)."""

    INITIALIZING = "initializing"
    COMPLETED = "completed"


class InstanceState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    STOPPING = "stopping"
    STOPPED = "stopped"


# Table of the state store -> the states a task moves its rows out of.
TRANSITIONAL: dict[str, frozenset[StrEnum]] = {
    "volumes": frozenset({VolumeState.CREATING, VolumeState.DELETING}),
    "attachments": frozenset({AttachmentState.ATTACHING, AttachmentState.DETACHING}),
    # A snapshot in the Recycle Bin is left by the task that purges it when retention ends.
    "snapshots": frozenset(
        {SnapshotState.PENDING, SnapshotState.RECOVERABLE, SnapshotState.RECOVERING}
    ),
    "binned_resources": frozenset({BinState.RECOVERABLE}),
    "modifications": frozenset({ModificationState.MODIFYING, ModificationState.OPTIMIZING}),
    # A temporary restore is left by the task that archives the snapshot again at expiry.
    "snapshot_tiers": frozenset(
        {
            TieringState.ARCHIVAL_IN_PROGRESS,
            TieringState.TEMPORARY_RESTORE_IN_PROGRESS,
            TieringState.TEMPORARY_RESTORE_COMPLETED,
            TieringState.PERMANENT_RESTORE_IN_PROGRESS,
        }
    ),
    "fast_snapshot_restores": frozenset(
        {FastRestoreState.ENABLING, FastRestoreState.OPTIMIZING, FastRestoreState.DISABLING}
    ),
    "volume_initializations": frozenset({InitializationState.INITIALIZING}),
    "instances": frozenset(
        {InstanceState.PENDING, InstanceState.SHUTTING_DOWN, InstanceState.STOPPING}
    ),
}

# Volumes whose data can be read, snapshotted, attached or modified.
USABLE_VOLUME = frozenset({VolumeState.AVAILABLE, VolumeState.IN_USE})
