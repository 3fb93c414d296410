"""What every control-plane module works with: the state store, the backend, the region,
the host instance and the task runner, held by `Ebs`; and the one DryRun check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends import Backend
from fakestor import errors
from fakestor.control.lifecycle_clock import DEFAULT_TIME_SCALE
from fakestor.control.quotas import DEFAULT_PENDING_SNAPSHOT_QUOTA
from fakestor.control.resources import Region, to_text, utcnow
from fakestor.control.state_store import StateStore
from fakestor.control.states import InstanceState
from fakestor.control.tasks import TaskRunner

if TYPE_CHECKING:
    from backends.nbd_exports import NbdExports
    from fakestor.control.regions import Regions

HOST_INSTANCE_TYPE = "m5.large"
HOST_IMAGE_ID = "ami-00000000000f4e570"  # fakestor's own, never launched from


class Ebs:
    """The control plane's shared context; the resource modules' functions take it first.

    Constructing it registers the machine fakestor runs on as a running instance, in
    the region that is the host's (`host`). `regions` gives the other regions' contexts.
    """

    def __init__(
        self,
        store: StateStore,
        backend: Backend,
        region: Region,
        host_instance_id: str,
        tasks: TaskRunner | None = None,
        *,
        time_scale: float = DEFAULT_TIME_SCALE,
        host: bool = True,
        pending_snapshot_quota: int = DEFAULT_PENDING_SNAPSHOT_QUOTA,
    ) -> None:
        self.store = store
        self.backend = backend
        self.region = region
        self.host_instance_id = host_instance_id
        self.tasks = tasks or TaskRunner()
        self.time_scale = time_scale  # EC2 durations are divided by this (lifecycle_clock)
        self.pending_snapshot_quota = pending_snapshot_quota  # control/quotas.py
        self.regions: Regions | None = None
        # The NBD exports of attachments to node instances (fakestor node); None where
        # attachments to other instances are records only.
        self.exports: NbdExports | None = None
        if host:
            self._register_host()

    @property
    def account_id(self) -> str:
        return self.region.account_id

    def _register_host(self) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO instances"
                "(id, zone, state, instance_type, image_id, launch_time, is_host) "
                "VALUES (?, ?, ?, ?, ?, ?, 1)",
                (
                    self.host_instance_id,
                    self.region.zones[0],
                    InstanceState.RUNNING,
                    HOST_INSTANCE_TYPE,
                    HOST_IMAGE_ID,
                    to_text(utcnow()),
                ),
            )

    def close(self) -> None:
        """Stop taking background work; what is unfinished resumes at the next start."""
        self.tasks.shutdown()


def check_dry_run(dry_run: bool) -> None:
    """The one DryRun check: called once a request has been validated, before it acts."""
    if dry_run:
        raise errors.DryRunOperation()
