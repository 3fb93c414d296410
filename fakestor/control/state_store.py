"""The SQLite state store: the control plane's records, one transaction per change.

One connection, serialised by a lock; WAL journal and synchronous=FULL so a
committed change survives a crash of the server or the machine.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    state TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    image_id TEXT NOT NULL,
    launch_time TEXT NOT NULL,
    is_host INTEGER NOT NULL DEFAULT 0,
    reservation_id TEXT,
    launch_index INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    volume_type TEXT NOT NULL,
    iops INTEGER,
    throughput INTEGER,
    zone TEXT NOT NULL,
    state TEXT NOT NULL,
    snapshot_id TEXT,
    encrypted INTEGER NOT NULL,
    kms_key_id TEXT,
    multi_attach INTEGER NOT NULL,
    auto_enable_io INTEGER NOT NULL DEFAULT 0,
    io_enabled INTEGER NOT NULL DEFAULT 1,
    create_time TEXT NOT NULL,
    status_reason TEXT
);
CREATE TABLE IF NOT EXISTS attachments (
    volume_id TEXT NOT NULL REFERENCES volumes(id),
    instance_id TEXT NOT NULL REFERENCES instances(id),
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    attach_time TEXT NOT NULL,
    delete_on_termination INTEGER NOT NULL DEFAULT 0,
    device_path TEXT,
    force_detach INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (volume_id, instance_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS attachments_device ON attachments(instance_id, device);
CREATE TABLE IF NOT EXISTS nodes (
    instance_id TEXT PRIMARY KEY REFERENCES instances(id),
    token_hash TEXT NOT NULL,
    address TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exports (
    volume_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    export_name TEXT NOT NULL,
    psk TEXT NOT NULL,
    tls INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    PRIMARY KEY (volume_id, instance_id)
);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL,
    volume_size INTEGER NOT NULL,
    state TEXT NOT NULL,
    progress INTEGER NOT NULL,
    start_time TEXT NOT NULL,
    completion_time TEXT,
    description TEXT NOT NULL,
    encrypted INTEGER NOT NULL,
    kms_key_id TEXT,
    source_snapshot_id TEXT,
    state_message TEXT
);
CREATE TABLE IF NOT EXISTS snapshot_permissions (
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    grantee_kind TEXT NOT NULL,
    grantee TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, grantee_kind, grantee)
);
CREATE TABLE IF NOT EXISTS modifications (
    volume_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    progress INTEGER NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT,
    original_size INTEGER NOT NULL,
    original_type TEXT NOT NULL,
    original_iops INTEGER,
    original_throughput INTEGER,
    original_multi_attach INTEGER NOT NULL,
    target_size INTEGER NOT NULL,
    target_type TEXT NOT NULL,
    target_iops INTEGER,
    target_throughput INTEGER,
    target_multi_attach INTEGER NOT NULL,
    status_message TEXT,
    PRIMARY KEY (volume_id, seq)
);
-- CloudWatch datapoints of EBS volumes (control/volume_metrics.py), timestamp in epoch seconds
CREATE TABLE IF NOT EXISTS volume_metrics (
    volume_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    sample_count REAL NOT NULL,
    sum REAL NOT NULL,
    minimum REAL NOT NULL,
    maximum REAL NOT NULL,
    unit TEXT NOT NULL,
    PRIMARY KEY (volume_id, metric, timestamp)
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    root_device_name TEXT NOT NULL,
    mappings TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    create_time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trash (
    kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    PRIMARY KEY (kind, resource_id)
);
-- ClientTokens of idempotent requests (control/idempotency.py): scope is the zone of a
-- zonal request or '' for a regional one, expires_at NULL until the resource has ended.
CREATE TABLE IF NOT EXISTS client_tokens (
    action TEXT NOT NULL,
    scope TEXT NOT NULL,
    token TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    PRIMARY KEY (action, scope, token)
);
CREATE TABLE IF NOT EXISTS tags (
    resource_id TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_id, key)
);
CREATE INDEX IF NOT EXISTS tags_by_type ON tags(resource_type);
-- Snapshot lifecycle (snapshot_locks.py, snapshot_tiers.py, fast_snapshot_restores.py):
-- times are when things happen here, EC2's durations divided by the server's time scale.
CREATE TABLE IF NOT EXISTS snapshot_locks (
    snapshot_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    created_on TEXT NOT NULL,
    duration_start TEXT NOT NULL,
    expires_on TEXT NOT NULL,
    duration_days INTEGER,
    cool_off_hours INTEGER,
    cool_off_expires TEXT
);
CREATE TABLE IF NOT EXISTS snapshot_tiers (
    snapshot_id TEXT PRIMARY KEY,
    storage_tier TEXT NOT NULL,
    state TEXT NOT NULL,
    started TEXT NOT NULL,
    due TEXT,
    progress INTEGER NOT NULL,
    archival_complete_time TEXT,
    restore_days INTEGER,
    restore_expiry TEXT
);
CREATE TABLE IF NOT EXISTS fast_snapshot_restores (
    snapshot_id TEXT NOT NULL,
    zone TEXT NOT NULL,
    state TEXT NOT NULL,
    due TEXT,
    enabling_time TEXT,
    optimizing_time TEXT,
    enabled_time TEXT,
    disabling_time TEXT,
    disabled_time TEXT,
    PRIMARY KEY (snapshot_id, zone)
);
-- Snapshots started through the EBS direct APIs (direct_writes.py), and the blocks
-- put into one while it is pending, each with the SHA-256 its writer gave.
CREATE TABLE IF NOT EXISTS direct_snapshots (
    snapshot_id TEXT PRIMARY KEY,
    parent_snapshot_id TEXT,
    kms_key_arn TEXT,
    timeout_minutes INTEGER NOT NULL,
    timeout_at TEXT NOT NULL,
    client_token TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    completing INTEGER NOT NULL DEFAULT 0
);
-- Recycle Bin (recycle_bin_rules.py, recycle_bin.py): retention rules, whose tag lists are
-- JSON [[key, value or null], ...], and the snapshots in the bin (state `recoverable`) with
-- when they leave it (recover_due is set while one is being restored, `recovering`).
CREATE TABLE IF NOT EXISTS rbin_rules (
    id TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    retention_days INTEGER NOT NULL,
    description TEXT NOT NULL,
    resource_tags TEXT NOT NULL,
    exclude_tags TEXT NOT NULL,
    lock_delay_days INTEGER,
    lock_state TEXT,
    lock_end_time TEXT,
    tags TEXT NOT NULL,
    create_time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recycle_bin (
    snapshot_id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    enter_time TEXT NOT NULL,
    exit_time TEXT NOT NULL,
    recover_due TEXT
);
-- Volumes and images in the Recycle Bin (recycle_bin_entry.py, recycle_bin_resources.py):
-- kind 'volume' or 'image', the resource keeping its own record, hidden while a row is here.
CREATE TABLE IF NOT EXISTS binned_resources (
    kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enter_time TEXT NOT NULL,
    exit_time TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (kind, resource_id)
);
-- KMS (kms_keys.py, kms_aliases.py): the region's keys, aliases (key_id NULL for a
-- predefined AWS alias whose key is not made yet) and key tags.
CREATE TABLE IF NOT EXISTS kms_keys (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    key_usage TEXT NOT NULL,
    key_spec TEXT NOT NULL,
    origin TEXT NOT NULL,
    key_manager TEXT NOT NULL,
    state TEXT NOT NULL,
    creation_date TEXT NOT NULL,
    deletion_date TEXT,
    pending_window_days INTEGER,
    multi_region INTEGER NOT NULL DEFAULT 0,
    policy TEXT
);
CREATE TABLE IF NOT EXISTS kms_aliases (
    name TEXT PRIMARY KEY,
    key_id TEXT,
    creation_date TEXT NOT NULL,
    last_updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kms_key_tags (
    key_id TEXT NOT NULL,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
);
-- Faults of the whole server (control/server_faults.py), set with `fakestor fault set`:
-- scope 'zone:NAME', 'type:NAME' or 'action:NAME', name 'capacity' or 'error-rate'.
CREATE TABLE IF NOT EXISTS server_faults (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS direct_blocks (
    snapshot_id TEXT NOT NULL,
    block_index INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, block_index)
);
-- The initialization of a volume restored from a snapshot or copied from a volume
-- (volume_initializations.py): a background pass over its data at `rate` MiB/s of EC2
-- time, `position` the byte offset it has reached, `done` the bytes of data it visited
-- out of `total` (NULL until the pass starts), and how long the rest takes here.
CREATE TABLE IF NOT EXISTS volume_initializations (
    volume_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    rate INTEGER NOT NULL,
    state TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    seconds_left INTEGER,
    started TEXT NOT NULL,
    completed TEXT
);
"""


# Columns added since a table was first released: (table, column, declaration).
ADDED_COLUMNS = [
    ("instances", "reservation_id", "TEXT"),
    ("instances", "launch_index", "INTEGER NOT NULL DEFAULT 0"),
    # DeleteSnapshot on a pending snapshot: deleted as soon as it completes, as on EBS.
    ("snapshots", "delete_requested", "INTEGER NOT NULL DEFAULT 0"),
    # Launches with block-device mappings: the root device, and TerminateInstances' guard.
    ("instances", "root_device_name", "TEXT NOT NULL DEFAULT '/dev/xvda'"),
    ("instances", "disable_api_termination", "INTEGER NOT NULL DEFAULT 0"),
    ("instances", "ephemeral", "TEXT NOT NULL DEFAULT '[]'"),  # [[device, ephemeralN], ...]
    # Another account's snapshot kept here (the built-in image's root); NULL: the account's.
    ("snapshots", "owner_id", "TEXT"),
    # Why EC2 ended an instance itself: [code, message] (a launch with an unusable KMS key).
    ("instances", "state_reason", "TEXT"),
    # Volume copies and initialization: the copy's source, VolumeInitializationRate,
    # and whether the volume was created with fast snapshot restore.
    ("volumes", "source_volume_id", "TEXT"),
    ("volumes", "initialization_rate", "INTEGER"),
    ("volumes", "fast_restored", "INTEGER NOT NULL DEFAULT 0"),
    # Faults (control/faults.py) read when an operation starts: until when an attach or
    # detach is held (a time, 'forever' or NULL), a snapshot's and a modification's fault.
    ("attachments", "stuck_until", "TEXT"),
    ("snapshots", "fault", "TEXT"),
    ("modifications", "fault", "TEXT"),
]


class StateStore:
    """The state database. Use `transaction()` for every read or change."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL leaves out the fsync at each commit. That
        # would survive kill -9 (the WAL is in the page cache), but a power loss or kernel
        # crash could take the last commits, and those are changes a client was already
        # told of (CreateVolume's answer, a DescribeVolumes that showed `attached`). The
        # price is one WAL fsync per change, 0.5-1 ms on a shared 2-core VM (BENCHMARKS.md,
        # scale); batching or merging transactions is the way to pay it less often.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, declaration in ADDED_COLUMNS:
                present = {info["name"] for info in db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            row = db.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO settings(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row["value"]) != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path} has state schema {row['value']}, this fakestor knows "
                    f"{SCHEMA_VERSION}; use a matching fakestor or a fresh --data-dir"
                )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def get_setting(self, key: str) -> str | None:
        with self.transaction() as db:
            row = db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
            return None if row is None else str(row["value"])

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO settings(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
