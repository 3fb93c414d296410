"""The Recycle Bin on real data (loopdev and fuse, root only): a snapshot or a volume of
written data that a rule retains keeps its data in the bin, comes back from it byte for byte,
and its data is released through the backend when its retention ends."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_recycle_bin import SCALE, WEEK_A_SECOND, rbin_client
from tests.test_loopdev import BACKENDS, Host, _read_raw, _write_raw, machine

pytestmark = pytest.mark.privileged

MIB = 1024 * 1024
OFFSETS = (0, 5 * MIB, 700 * MIB)


@pytest.fixture(params=BACKENDS)
def host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    def fast_server(**kwargs: Any) -> Any:
        return start_server(*WEEK_A_SECOND, **kwargs)

    with machine(fast_server, tmp_path, request.param) as running:
        yield running


@pytest.fixture(params=BACKENDS)
def day_host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    """A server where an EC2 day takes a second: a volume's longest retention, 7 s."""

    def server(**kwargs: Any) -> Any:
        return start_server("--time-scale", "86400", **kwargs)

    with machine(server, tmp_path, request.param) as running:
        yield running


def _volume_data(host: Host, volume_id: str) -> Path:
    """Where the backend keeps a volume's data."""
    data_dir = host.server.data_dir
    if host.backend == "fuse":
        return data_dir / "fuse" / "mnt" / "volumes" / volume_id
    return data_dir / "volumes" / f"{volume_id}.img"


def _snapshot_data(host: Host, snapshot_id: str) -> Path:
    """Where the backend keeps a snapshot's data."""
    data_dir = host.server.data_dir
    if host.backend == "fuse":
        return data_dir / "fuse" / "mnt" / "snapshots" / snapshot_id
    return data_dir / "snapshots" / f"{snapshot_id}.img"


def _digest(device: Path) -> str:
    digest = hashlib.sha256()
    for offset in OFFSETS:
        digest.update(_read_raw(device, offset, MIB))
    return digest.hexdigest()


def test_binned_snapshot_restores_with_its_data_and_is_purged(host: Host) -> None:
    ec2, rbin = host.ec2, rbin_client(host.server.url)
    source = new_volume(ec2, 1)
    device = host.attach(source)
    for offset in OFFSETS:
        _write_raw(device, offset, os.urandom(MIB))
    written = _digest(device)
    snapshot_id = ec2.create_snapshot(VolumeId=source)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    host.detach(source)

    rule = rbin.create_rule(
        ResourceType="EBS_SNAPSHOT",
        RetentionPeriod={"RetentionPeriodValue": 365, "RetentionPeriodUnit": "DAYS"},
    )["Identifier"]
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    listed = ec2.list_snapshots_in_recycle_bin()["Snapshots"]
    assert [s["SnapshotId"] for s in listed] == [snapshot_id]
    assert _snapshot_data(host, snapshot_id).exists()  # the bin keeps the data

    ec2.restore_snapshot_from_recycle_bin(SnapshotId=snapshot_id)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    restored = new_volume(ec2, 1, SnapshotId=snapshot_id)
    assert _digest(host.attach(restored, "/dev/sdg")) == written
    host.detach(restored)

    # Retention ends (7 days: a second here): the data goes through the backend.
    rbin.update_rule(
        Identifier=rule,
        RetentionPeriod={"RetentionPeriodValue": 7, "RetentionPeriodUnit": "DAYS"},
    )
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    item = ec2.list_snapshots_in_recycle_bin()["Snapshots"][0]
    kept = (item["RecycleBinExitTime"] - item["RecycleBinEnterTime"]).total_seconds()
    assert abs(kept - 7 * 86400 / SCALE) < 0.01
    wait_for(lambda: not _snapshot_data(host, snapshot_id).exists(), timeout=20)
    assert ec2.list_snapshots_in_recycle_bin()["Snapshots"] == []
    # The volume restored from it keeps its own copy.
    assert _digest(host.attach(restored)) == written
    host.detach(restored)


def test_binned_volume_restores_with_its_data_and_is_purged(day_host: Host) -> None:
    host = day_host
    ec2, rbin = host.ec2, rbin_client(host.server.url)
    volume_id = new_volume(ec2, 1)
    device = host.attach(volume_id)
    for offset in OFFSETS:
        _write_raw(device, offset, os.urandom(MIB))
    written = _digest(device)
    host.detach(volume_id)
    rbin.create_rule(
        ResourceType="EBS_VOLUME",
        RetentionPeriod={"RetentionPeriodValue": 7, "RetentionPeriodUnit": "DAYS"},
    )

    ec2.delete_volume(VolumeId=volume_id)
    assert [v["VolumeId"] for v in ec2.list_volumes_in_recycle_bin()["Volumes"]] == [volume_id]
    assert _volume_data(host, volume_id).exists()  # the bin keeps the data
    ec2.restore_volume_from_recycle_bin(VolumeId=volume_id)
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available"
    assert _digest(host.attach(volume_id, "/dev/sdg")) == written
    host.detach(volume_id)

    # Deleted again and left in the bin: its data goes when the 7 days (7 s) end.
    ec2.delete_volume(VolumeId=volume_id)
    assert _volume_data(host, volume_id).exists()
    wait_for(lambda: not _volume_data(host, volume_id).exists(), timeout=30)
    assert ec2.list_volumes_in_recycle_bin()["Volumes"] == []
