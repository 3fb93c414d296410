"""The regions one fakestor serves, as EC2's regional endpoints: a context (`Ebs`) per region,
each with its own state store, sharing the backend and the task runner."""

from __future__ import annotations

import logging
import threading
from functools import cache
from pathlib import Path

from botocore.loaders import Loader

from backends import Backend, BackendError
from fakestor import errors
from fakestor.control import kms_keys
from fakestor.control.context import Ebs
from fakestor.control.images import ensure_builtin_root_snapshot
from fakestor.control.lifecycle_clock import DEFAULT_TIME_SCALE
from fakestor.control.quotas import DEFAULT_PENDING_SNAPSHOT_QUOTA
from fakestor.control.resources import Region
from fakestor.control.state_store import StateStore
from fakestor.control.tasks import TaskRunner

log = logging.getLogger(__name__)

PARTITION = "aws"

# EC2's zone names where a region's letters are not a, b, c (DescribeAvailabilityZones
# of a commercial account; the letter-to-zone mapping itself differs per account). AWS
# publishes AZ ids per region, not the letters an account sees; this table was not checked
# against a complete published list, so other regions get a, b, c (each has at least three).
ZONE_LETTERS = {
    "us-east-1": "abcdef",
    "us-west-1": "bc",
    "us-west-2": "abcd",
    "ap-northeast-1": "acd",
    "ap-northeast-2": "abcd",
    "ca-central-1": "abd",
}

# Enabled in every account; the regions launched since March 2019 need an opt-in.
OPT_IN_NOT_REQUIRED = frozenset(
    {
        "us-east-1", "us-east-2", "us-west-1", "us-west-2",
        "ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        "ap-southeast-1", "ap-southeast-2", "ca-central-1", "sa-east-1",
        "eu-central-1", "eu-west-1", "eu-west-2", "eu-west-3", "eu-north-1",
    }
)  # fmt: skip

# Requests that only read (EC2's Describe*/Get*, EBS direct's List*/Get*): in a region
# with no state store yet they are answered from an empty one kept in memory.
READ_PREFIXES = ("Describe", "Get", "List")

# A region's records live in DATA_DIR/regions/<name>/state.db, except those of the
# region DATA_DIR/state.db was first made for (so a data dir from before keeps working).
PRIMARY_STORE = "state.db"
REGION_OF_STORE = "region"  # the setting that says which region a state store holds


@cache
def ec2_regions() -> tuple[str, ...]:
    """The regions of the aws partition that have an EC2 endpoint, from botocore's data."""
    endpoints = Loader().load_data("endpoints")
    partition = next(p for p in endpoints["partitions"] if p["partition"] == PARTITION)
    served = partition["services"]["ec2"]["endpoints"]
    return tuple(sorted(name for name in partition["regions"] if name in served))


def zone_letters(name: str) -> str:
    return ZONE_LETTERS.get(name, "abc")


def opt_in_status(name: str) -> str:
    # fakestor serves every region, so the account has opted in to those that need it.
    return "opt-in-not-required" if name in OPT_IN_NOT_REQUIRED else "opted-in"


class Regions:
    """Every region served, each region's context opened on first use.

    `home` is the server's --region: the host instance and instance metadata are its.
    """

    def __init__(
        self,
        data_dir: Path,
        backend: Backend,
        home: Region,
        host_instance_id: str,
        time_scale: float = DEFAULT_TIME_SCALE,
        pending_snapshot_quota: int = DEFAULT_PENDING_SNAPSHOT_QUOTA,
    ) -> None:
        self.data_dir = data_dir
        self.time_scale = time_scale
        self.pending_snapshot_quota = pending_snapshot_quota
        self.backend = backend
        self.host_instance_id = host_instance_id
        self.tasks = TaskRunner()
        self.names = tuple(sorted({*ec2_regions(), home.name}))
        self._home_region = home
        self._contexts: dict[str, Ebs] = {}
        self._unstored: dict[str, Ebs] = {}  # regions read but never written: in memory
        self._opening: dict[str, threading.Lock] = {}
        self._started = False
        self._stores: list[StateStore] = []
        self._guard = threading.Lock()
        primary = self._open_store(data_dir / PRIMARY_STORE)
        self._primary_name = primary.get_setting(REGION_OF_STORE)
        if self._primary_name is None:
            primary.set_setting(REGION_OF_STORE, home.name)
            self._primary_name = home.name
        self._primary = primary
        self.home = self.get(home.name)

    def _open_store(self, path: Path) -> StateStore:
        store = StateStore(path)
        self._stores.append(store)
        return store

    def _store_path(self, name: str) -> Path:
        return self.data_dir / "regions" / name / "state.db"

    def get(self, name: str, *, reading: bool = False) -> Ebs:
        """The context of region `name`; AuthFailure for a region EC2 does not have.

        `reading`: the request only reads, so a region without a state store gets an empty
        one in memory instead of one created on disk.
        """
        if name not in self.names:
            raise errors.AuthFailure(
                f"Credential should be scoped to a valid region, not '{name}'. fakestor "
                f"serves the regions of AWS's {PARTITION} partition (DescribeRegions)."
            )
        with self._guard:
            ebs = self._contexts.get(name)
            if ebs is not None:
                return ebs
            stored = name == self._primary_name or self._store_path(name).exists()
            if reading and not stored:
                ebs = self._unstored.get(name)
                if ebs is None:
                    ebs = self._context(name, StateStore(Path(":memory:")))
                    self._unstored[name] = ebs
                return ebs
            opening = self._opening.setdefault(name, threading.Lock())
        # One thread opens a region; the others' requests in other regions go on meanwhile
        # (making the built-in image's snapshot takes backend time).
        with opening:
            with self._guard:
                ebs = self._contexts.get(name)
                if ebs is not None:
                    return ebs
                if name == self._primary_name:
                    store = self._primary
                else:
                    store = self._open_store(self._store_path(name))
            ebs = self._context(name, store)
            if self._started:
                try:
                    ensure_builtin_root_snapshot(ebs)
                except BackendError as failure:
                    # The region still serves; launches of the built-in image wait for
                    # the next start, which makes the snapshot again.
                    log.warning("built-in image's snapshot in %s: %s", name, failure)
            with self._guard:
                self._contexts[name] = ebs
                # Requests still holding the in-memory context finish with it.
                self._unstored.pop(name, None)
            return ebs

    def _context(self, name: str, store: StateStore) -> Ebs:
        home = name == self._home_region.name
        region = (
            self._home_region
            if home
            else Region(name, zone_letters(name), self._home_region.account_id)
        )
        ebs = Ebs(
            store,
            self.backend,
            region,
            self.host_instance_id,
            self.tasks,
            time_scale=self.time_scale,
            host=home,
            pending_snapshot_quota=self.pending_snapshot_quota,
        )
        ebs.regions = self
        kms_keys.adopt_legacy_default_key(ebs)
        return ebs

    def start(self, contexts: list[Ebs]) -> None:
        """Once the backend has started (and what was unfinished is resumed): give every
        region with a state store, and each one made from now on, the built-in image's
        root snapshot."""
        for ebs in contexts:
            ensure_builtin_root_snapshot(ebs)
        with self._guard:
            self._started = True

    def with_records(self) -> list[Ebs]:
        """The home region's context and that of every region with a state store."""
        names = {self.home.region.name, str(self._primary_name)}
        names |= {path.parent.name for path in self.data_dir.glob("regions/*/state.db")}
        return [self.get(name) for name in sorted(names) if name in self.names]

    def close(self) -> None:
        """Stop taking background work, then close every state store."""
        self.tasks.shutdown()
        with self._guard:
            for store in self._stores:
                store.close()
            for ebs in self._unstored.values():
                ebs.store.close()
            self._unstored.clear()
