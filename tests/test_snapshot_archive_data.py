"""The archive tier moves real data: an archived snapshot's data leaves the shared store
(fuse: chunks into an archive file of its own; loopdev: the image into the archive dir),
a volume cannot be made from it, and after a restore a volume made from it holds exactly
what was written."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ZONE, ServerFactory, fast_waiter, wait_for
from tests.test_loopdev import BACKENDS, Host, machine

pytestmark = pytest.mark.privileged

MIB = 1024 * 1024


@pytest.fixture(params=BACKENDS)
def tiered(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    # An EC2 day takes a second: archival (hours) and restores (up to 72 hours) take seconds.
    with machine(start_server, tmp_path, request.param, args=("--time-scale", "86400")) as host:
        yield host


def _tier(host: Host, snapshot_id: str) -> str:
    status = host.ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}]
    )["SnapshotTierStatuses"][0]
    return f"{status['StorageTier']} {status['LastTieringOperationStatus']}"


def _archived_data(host: Host, snapshot_id: str) -> Path:
    data_dir = host.server.data_dir
    if host.backend == "fuse":
        return data_dir / "fuse" / "archive" / f"{snapshot_id}.archive"
    return data_dir / "archive" / f"{snapshot_id}.img"


def _stored_data(host: Host, snapshot_id: str) -> bool:
    """Whether the snapshot's data is where snapshots are read from."""
    data_dir = host.server.data_dir
    if host.backend == "fuse":
        return (data_dir / "fuse" / "mnt" / "snapshots" / snapshot_id).exists()
    return (data_dir / "snapshots" / f"{snapshot_id}.img").exists()


def test_archive_moves_the_data_out_and_a_restore_brings_it_back(tiered: Host) -> None:
    ec2 = tiered.ec2
    volume_id = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    device = tiered.attach(volume_id)
    written = os.urandom(3 * MIB)
    with open(device, "r+b") as raw:
        for offset in (0, 200 * MIB, 900 * MIB):
            raw.seek(offset)
            raw.write(written[:MIB])
        raw.flush()
        os.fsync(raw.fileno())
    expected = hashlib.sha256(device.read_bytes()).hexdigest()
    tiered.detach(volume_id)
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    ec2.delete_volume(VolumeId=volume_id)
    assert _stored_data(tiered, snapshot_id)

    ec2.modify_snapshot_tier(SnapshotId=snapshot_id, StorageTier="archive")
    wait_for(lambda: _tier(tiered, snapshot_id) == "archive archival-completed", timeout=60)
    archived = _archived_data(tiered, snapshot_id)
    assert archived.exists() and not _stored_data(tiered, snapshot_id)
    if tiered.backend == "fuse":  # a full copy of the snapshot's chunks: 3 MiB of them
        assert archived.stat().st_size >= 3 * MIB
    with pytest.raises(ClientError, match="IncorrectState"):
        ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)

    # The server stops and starts with the data in the archive: nothing is flagged lost.
    tiered.server.stop()
    tiered.server.start()
    assert "no data" not in tiered.server.log().lower()

    ec2 = tiered.ec2 = tiered.server.client()
    ec2.restore_snapshot_tier(SnapshotId=snapshot_id, PermanentRestore=True)
    wait_for(
        lambda: _tier(tiered, snapshot_id) == "standard permanent-restore-completed", timeout=60
    )
    assert _stored_data(tiered, snapshot_id) and not archived.exists()
    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[restored])
    device = tiered.attach(restored)
    assert hashlib.sha256(device.read_bytes()).hexdigest() == expected
    tiered.detach(restored)
    ec2.delete_volume(VolumeId=restored)
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    time.sleep(0.5)
    assert not archived.exists() and not _stored_data(tiered, snapshot_id)
