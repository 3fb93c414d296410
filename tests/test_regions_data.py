"""A snapshot copied to another region carries real data (loopdev; root), and a restart
reconciles every region's records with the one data dir."""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REGION, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_regions import EU, region_client
from tests.test_loopdev import MIB, Host, machine


@pytest.fixture
def loop_host(start_server: ServerFactory, tmp_path: Path) -> Iterator[Host]:
    with machine(start_server, tmp_path, "loopdev") as running:
        yield running


@pytest.mark.privileged
def test_a_snapshot_copied_to_another_region_carries_its_data(loop_host: Host) -> None:
    server, ec2 = loop_host.server, loop_host.ec2
    volume_id = new_volume(ec2)
    device = loop_host.attach(volume_id)
    written = os.urandom(8 * MIB)
    with open(device, "r+b") as raw:
        raw.write(written)
        raw.flush()
        os.fsync(raw.fileno())
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    loop_host.detach(volume_id)

    eu = region_client(server.url, EU)
    copy_id = eu.copy_snapshot(SourceSnapshotId=snapshot_id, SourceRegion=REGION)["SnapshotId"]
    fast_waiter(eu, "snapshot_completed")(SnapshotIds=[copy_id])
    images = server.data_dir / "snapshots"
    assert filecmp.cmp(images / f"{snapshot_id}.img", images / f"{copy_id}.img", shallow=False)
    restored = new_volume(eu, zone="eu-west-1a", SnapshotId=copy_id)
    # On ext4 a restore is lazy: its image holds the data once initialized (lazy.py).
    wait_for(lambda: not list(server.data_dir.glob("volumes/*.img.lazy")), timeout=60)
    with open(server.data_dir / "volumes" / f"{restored}.img", "rb") as image:
        same = image.read(len(written)) == written  # (no 8 MiB diff on failure)
    assert same, "the restored image differs from what was written"

    # One data dir, two regions' records: a restart finds a record for every image.
    before = len(server.log())
    assert server.stop() == 0
    server.start()
    loop_host.ec2 = server.client()
    eu = region_client(server.url, EU)
    assert [v["VolumeId"] for v in eu.describe_volumes()["Volumes"]] == [restored]
    assert eu.describe_snapshots(SnapshotIds=[copy_id])["Snapshots"][0]["State"] == "completed"
    assert "reconcile:" not in server.log()[before:]
