"""What must hold when things go wrong around the server: a second server on a data dir in
use, an unexpected error in a background task, lost chunks, sizes a data dir cannot hold,
requests too large to parse. Real servers, real devices, real clients.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from fakestor.mounts import Mount, mount_table
from tests.conftest import ZONE, ServerFactory, fast_waiter, new_volume, require
from tests.test_loopdev import BACKENDS, MIB, _check, _read_raw, _write_raw, machine, run

GIB = 1024 * MIB

# Writes numbered files of random data into DIR, fsyncs each, then prints "name sha256":
# a printed line is a write the filesystem acknowledged as durable.
WRITER = """
import hashlib, mmap, os, sys, time
directory, seconds = sys.argv[1], float(sys.argv[2])
deadline, index = time.monotonic() + seconds, 0
aligned = mmap.mmap(-1, 256 * 1024)  # O_DIRECT needs an aligned buffer
while time.monotonic() < deadline:
    data = os.urandom(256 * 1024)
    aligned[:] = data
    path = os.path.join(directory, f"f{index}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        os.write(fd, aligned)
        os.fsync(fd)
    finally:
        os.close(fd)
    print(path, hashlib.sha256(data).hexdigest(), flush=True)
    index += 1
"""


def fuse_mounts(data_dir: Path) -> list[Mount]:
    target = str(data_dir / "fuse" / "mnt")
    return [mount for mount in mount_table() if mount.target == target]


@pytest.mark.privileged
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_server_on_a_data_dir_in_use_changes_nothing(
    start_server: ServerFactory, tmp_path: Path, backend: str
) -> None:
    with machine(start_server, tmp_path, backend) as host:
        server = host.server
        volume_id = new_volume(host.ec2, 1)
        device = host.attach(volume_id)
        run("mkfs.ext4", "-q", str(device))
        point = host.mount(device)
        devices_before = os.path.realpath(device)
        mounts_before = fuse_mounts(server.data_dir)

        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(point), "6"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.5)  # writes in flight, some not committed yet, when the second one starts
        second = subprocess.run(
            [sys.executable, "-m", "fakestor", "server", "--backend", backend,
             "--listen", "127.0.0.1:0", "--data-dir", str(server.data_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        acknowledged, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
        assert second.returncode == 1
        assert "another fakestor server is using" in second.stderr
        assert "Traceback" not in second.stderr

        # The first server's device, link and block-store mount are untouched ...
        assert os.path.realpath(device) == devices_before
        assert fuse_mounts(server.data_dir) == mounts_before
        # ... and every acknowledged write reads back, now and after a remount.
        written = [line.split() for line in acknowledged.splitlines()]
        assert len(written) > 10
        host.unmount(point)
        point = host.mount(device)
        for path, digest in written:
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest, path
        # It still attaches new volumes.
        other = new_volume(host.ec2, 1)
        host.attach(other, "/dev/sdg")
        host.unmount(point)
        host.detach(other)
        host.detach(volume_id)
        server.stop()
        if backend == "fuse":
            report = _check(server.data_dir)
            assert report.returncode == 0, report.stdout + report.stderr
            assert "block store consistent" in report.stdout
            assert ", 0 missing" in report.stdout


def test_an_unexpected_error_in_an_attach_ends_the_attachment(
    start_server: ServerFactory,
) -> None:
    server = start_server(env={"FAKESTOR_FAILPOINTS": "attach.backend=raise"})
    ec2 = server.client()
    volume_id = new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdf")
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["Attachments"] == []
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "ok"  # the data is fine; the attach failed
    [event] = status["Events"]
    assert f"attach to {server.host_instance_id} failed" in event["Description"]
    assert "failpoint attach.backend" in event["Description"]
    assert "background task failed: attach" in server.log()


def _lose_a_chunk(data_dir: Path) -> Path:
    chunks = sorted(data_dir.glob("fuse/chunks/*/*"), key=lambda p: int(p.name))
    victim = chunks[len(chunks) // 2]
    victim.unlink()
    return victim


@pytest.mark.privileged
def test_lost_chunks_are_damage_reported_and_never_read_as_data(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    with machine(start_server, tmp_path, "fuse") as host:
        server, ec2 = host.server, host.ec2
        volume_id = new_volume(ec2, 1)
        device = host.attach(volume_id)
        data = os.urandom(8 * MIB)  # 16 chunks
        _write_raw(device, 0, data)
        snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
        fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
        host.detach(volume_id)
        server.stop()

        _lose_a_chunk(server.data_dir)  # shared by the volume and its snapshot
        for extra in ((), ("--repair",)):
            report = _check(server.data_dir, *extra)
            assert report.returncode == 1, report.stdout
            assert "block store damaged" in report.stdout
            assert f"{volume_id}: 1 chunk(s)" in report.stdout
            assert f"{snapshot_id}: 1 chunk(s)" in report.stdout

        server.start()
        host.ec2 = ec2 = server.client()
        status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
        assert status["VolumeStatus"]["Status"] == "impaired"
        [event] = status["Events"]
        assert event["EventType"] == "potential-data-inconsistency"
        assert "missing from the block store" in event["Description"]
        assert [a["Code"] for a in status["Actions"]] == ["enable-volume-io"]
        snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        assert snapshot["State"] == "error"
        assert "missing from the block store" in snapshot["StateMessage"]

        # The lost range fails to read; the rest reads back as written.
        device = host.attach(volume_id)
        lost = []
        for index in range(16):
            offset = index * 512 * 1024
            try:
                assert _read_raw(device, offset, 512 * 1024) == data[offset : offset + 512 * 1024]
            except OSError as failure:
                assert failure.errno == errno.EIO
                lost.append(index)
        assert len(lost) == 1
        assert "check: " in server.log()
        host.detach(volume_id)


@contextmanager
def filesystem_at(path: Path, fstype: str, size_mib: int) -> Iterator[Path]:
    """A fresh `fstype` filesystem of `size_mib` mounted at `path` (on a loop device)."""
    image = path.with_suffix(".img")
    with image.open("wb") as new_image:
        new_image.truncate(size_mib * MIB)
    block_size = ["-b", "4096"] if fstype == "ext4" else []  # as on a disk; small ones get 1 KiB
    run(f"mkfs.{fstype}", "-q", *block_size, str(image))
    path.mkdir()
    run("mount", "-o", "loop", str(image), str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        image.unlink()


@pytest.mark.privileged
def test_sizes_the_data_dir_cannot_hold_are_refused_up_front(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    with (
        filesystem_at(tmp_path / "ext4", "ext4", 64) as ext4,
        machine(start_server, tmp_path, "loopdev", data_dir=ext4 / "data") as host,
    ):
        ec2 = host.ec2
        with pytest.raises(ClientError) as refused:
            ec2.create_volume(AvailabilityZone=ZONE, Size=16384, VolumeType="gp3")
        error = refused.value.response["Error"]
        assert error["Code"] == "InsufficientVolumeCapacity"
        assert "ext4, whose largest file is 16383 GiB" in error["Message"]
        assert "xfs" in error["Message"]
        largest = new_volume(ec2, 16383, VolumeType="gp3")  # sparse: costs nothing
        with pytest.raises(ClientError) as too_big:
            ec2.modify_volume(VolumeId=largest, Size=16384)
        assert too_big.value.response["Error"]["Code"] == "InsufficientVolumeCapacity"
        device = host.attach(largest)
        assert int(run("blockdev", "--getsize64", str(device))) == 16383 * GIB
        host.detach(largest)
        ec2.delete_volume(VolumeId=largest)
        fast_waiter(ec2, "volume_deleted")(VolumeIds=[largest])


@pytest.mark.privileged
@pytest.mark.parametrize("backend", ["loopdev-on-xfs", "fuse-on-ext4"])
def test_the_largest_ebs_volume_works_where_the_data_dir_can_hold_it(
    start_server: ServerFactory, tmp_path: Path, backend: str
) -> None:
    name, _, fstype = backend.partition("-on-")
    require(subprocess.run(["which", f"mkfs.{fstype}"]).returncode == 0, f"needs mkfs.{fstype}")
    with (
        filesystem_at(tmp_path / fstype, fstype, 512) as root,
        machine(start_server, tmp_path, name, data_dir=root / "data") as host,
    ):
        volume_id = new_volume(host.ec2, 65536, VolumeType="gp3")
        device = host.attach(volume_id)
        assert int(run("blockdev", "--getsize64", str(device))) == 65536 * GIB
        _write_raw(device, 65536 * GIB - MIB, b"end" * 1000)
        assert _read_raw(device, 65536 * GIB - MIB, 3000) == b"end" * 1000
        host.detach(volume_id)
        host.ec2.delete_volume(VolumeId=volume_id)
        fast_waiter(host.ec2, "volume_deleted")(VolumeIds=[volume_id])


def test_a_request_too_long_to_parse_gets_an_ec2_error(start_server: ServerFactory) -> None:
    server = start_server()
    query = "&".join(f"VolumeId.{n}=vol-{n:017x}" for n in range(1, 15000))  # about 390 KB
    request = urllib.request.Request(f"{server.url}/?Action=DescribeVolumes&{query}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 431
    assert refused.value.headers["Content-Type"].startswith("text/xml")
    body = refused.value.read().decode()
    assert "<Code>RequestHeaderFieldsTooLarge</Code>" in body
    assert "POST body" in body
    server.client().describe_volumes()  # and the server carries on
