"""The loopdev backend's policy layer with real loop devices (root, FUSE, loop): when an
attach goes through it, faults on its device, data reaching the image, a kill -9 of the
server, snapshots of a mounted filesystem, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import loop
from tests.conftest import ServerFactory, fast_waiter, new_volume, require, wait_for
from tests.test_faults_io import clear_io, dd_read, dd_write, set_io
from tests.test_loopdev import Host, by_id, machine

pytestmark = pytest.mark.privileged
MIB = 1024 * 1024


@pytest.fixture
def loop_host(start_server: ServerFactory, tmp_path: Path) -> Iterator[Host]:
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse (modprobe fuse)")
    with machine(start_server, tmp_path, "loopdev") as running:
        yield running


def backing_file(device: Path) -> str:
    found = loop.backing_file(os.path.realpath(device))
    assert found is not None
    return found


def layer_mount(host: Host) -> Path:
    return host.server.data_dir / "policy" / "mnt"


def test_a_volume_without_faults_is_attached_directly(loop_host: Host) -> None:
    volume_id = new_volume(loop_host.ec2)
    device = loop_host.attach(volume_id)
    assert backing_file(device).endswith(f"volumes/{volume_id}.img")
    assert not os.path.ismount(layer_mount(loop_host))  # the layer is made on first need
    # A fault tagged now applies from the next attach; the server says so.
    set_io(loop_host.ec2, volume_id, "error:read")
    assert dd_read(device, 0).returncode == 0
    assert "from its next attach" in loop_host.server.log()
    loop_host.detach(volume_id)
    device = loop_host.attach(volume_id)
    assert backing_file(device) == str(layer_mount(loop_host) / volume_id)
    assert dd_read(device, 0).returncode != 0
    clear_io(loop_host.ec2, volume_id)
    assert dd_read(device, 0).returncode == 0
    loop_host.detach(volume_id)


def test_read_errors_on_a_range_through_the_layer(loop_host: Host) -> None:
    ec2 = loop_host.ec2
    volume_id = new_volume(ec2)
    set_io(ec2, volume_id, "error:read:2M-4M")  # before the attach: through the layer
    device = loop_host.attach(volume_id)
    assert dd_write(device, 0, 8).returncode == 0
    for mib in (2, 3):
        failed = dd_read(device, mib)
        assert failed.returncode != 0 and "Input/output error" in failed.stderr
    for mib in (0, 1, 4, 7):
        assert dd_read(device, mib).returncode == 0, mib
    clear_io(ec2, volume_id)
    assert dd_read(device, 2).returncode == 0
    loop_host.detach(volume_id)


def test_acknowledged_writes_survive_a_kill_of_the_server(loop_host: Host) -> None:
    ec2 = loop_host.ec2
    volume_id = new_volume(ec2)
    set_io(ec2, volume_id, "latency:1")
    device = loop_host.attach(volume_id)
    image = loop_host.server.data_dir / "volumes" / f"{volume_id}.img"
    payload = os.urandom(MIB)
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, payload, 3 * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    with image.open("rb") as data:  # in the image, not only in the layer
        data.seek(3 * MIB)
        assert data.read(MIB) == payload
    loop_host.server.kill()
    loop_host.server.start()
    loop_host.ec2 = ec2 = loop_host.server.client()
    # The relink binds the volume through a new layer; its data is there.
    wait_for(lambda: by_id(volume_id).exists() and dd_read(by_id(volume_id), 3).returncode == 0,
             timeout=30)  # fmt: skip
    assert backing_file(by_id(volume_id)) == str(layer_mount(loop_host) / volume_id)
    with open(by_id(volume_id), "rb") as data:
        data.seek(3 * MIB)
        assert data.read(MIB) == payload
    assert loop_host.attachment_state(volume_id) == "attached"
    loop_host.detach(volume_id)


def test_a_snapshot_of_a_mounted_filesystem_through_the_layer(loop_host: Host) -> None:
    ec2 = loop_host.ec2
    volume_id = new_volume(ec2)
    set_io(ec2, volume_id, "latency:1")
    device = loop_host.attach(volume_id)
    subprocess.run(["mkfs.ext4", "-q", str(device)], check=True)
    point = loop_host.mount(device)
    (point / "data").write_bytes(b"through the layer\n" * 1000)  # in the page cache only
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    restored = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)
    fast_waiter(ec2, "volume_available")(VolumeIds=[restored["VolumeId"]])
    copy = loop_host.attach(restored["VolumeId"], "/dev/sdg")
    copy_point = loop_host.mount(copy, "copy")
    assert (copy_point / "data").read_bytes() == b"through the layer\n" * 1000
    loop_host.unmount(copy_point)
    loop_host.unmount(point)
    loop_host.detach(restored["VolumeId"])
    loop_host.detach(volume_id)


def test_the_layer_grows_with_modify_volume(loop_host: Host) -> None:
    ec2 = loop_host.ec2
    volume_id = new_volume(ec2, 1)
    set_io(ec2, volume_id, "latency:1")
    device = loop_host.attach(volume_id)
    ec2.modify_volume(VolumeId=volume_id, Size=2)
    wait_for(lambda: loop.size_bytes(os.path.realpath(device)) == 2 * 1024 * MIB, timeout=30)
    assert dd_write(device, 1500).returncode == 0
    loop_host.detach(volume_id)
