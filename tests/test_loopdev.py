"""The loopdev backend with real loop devices, filesystems and mounts (root only).

Every test leaves the machine as it found it: no bound loop device, no mount,
no /dev link of ours; the fixture checks, and a leak fails the test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from backends import loop
from backends.devices import LoopDevices
from fakestor.device_names import by_id_name
from fakestor.mounts import mount_table
from tests.conftest import (
    Server,
    ServerFactory,
    fast_waiter,
    new_volume,
    require,
    require_root_and_loop,
    wait_for,
)

pytestmark = pytest.mark.privileged
MIB = 1024 * 1024
GIB = 1024 * MIB


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def by_id(volume_id: str) -> Path:
    return Path("/dev/disk/by-id") / by_id_name(volume_id)


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Host:
    """The server plus what a test mounted, so teardown can undo it."""

    def __init__(self, server: Server, tmp_path: Path, backend: str) -> None:
        self.backend = backend
        self.server = server
        self.ec2 = server.client()
        self.tmp_path = tmp_path
        self.mounts: list[Path] = []

    def attach(self, volume_id: str, device: str = "/dev/sdf") -> Path:
        self.ec2.attach_volume(
            VolumeId=volume_id, InstanceId=self.server.host_instance_id, Device=device
        )
        wait_for(lambda: self.attachment_state(volume_id) == "attached")
        link = by_id(volume_id)
        assert link.is_symlink(), f"{link} missing"
        assert Path(os.path.realpath(link)).name.startswith("loop")
        return link

    def attachment_state(self, volume_id: str) -> str:
        volume = self.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        return str(volume["Attachments"][0]["State"]) if volume["Attachments"] else "none"

    def detach(self, volume_id: str, force: bool = False) -> None:
        self.ec2.detach_volume(VolumeId=volume_id, Force=force)
        fast_waiter(self.ec2, "volume_available")(VolumeIds=[volume_id])
        assert not by_id(volume_id).exists()

    def mount(self, device: Path, name: str = "mnt") -> Path:
        point = self.tmp_path / name
        point.mkdir(exist_ok=True)
        run("mount", str(device), str(point))
        self.mounts.append(point)
        return point

    def unmount(self, point: Path) -> None:
        run("umount", str(point))
        self.mounts.remove(point)

    def cleanup(self) -> None:
        for point in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(point)], check=False)
        self.mounts.clear()
        if self.server.process is None:
            return
        for volume in self.ec2.describe_volumes()["Volumes"]:
            for attachment in volume["Attachments"]:
                if attachment["State"] != "detaching":
                    self.ec2.detach_volume(
                        VolumeId=volume["VolumeId"], InstanceId=attachment["InstanceId"], Force=True
                    )
        wait_for(
            lambda: all(not v["Attachments"] for v in self.ec2.describe_volumes()["Volumes"]),
            timeout=30,
        )


def ours(data_dir: Path) -> list[loop.BoundDevice]:
    return loop.bound_under(data_dir)


def our_links() -> list[Path]:
    """By-id links that point nowhere: what a sloppy detach would leave."""
    return [
        link for link in Path("/dev/disk/by-id").glob(f"{by_id_name('vol-')}*") if not link.exists()
    ]


BACKENDS = ["loopdev", "fuse"]


def require_backend(backend: str) -> None:
    require_root_and_loop()
    if backend == "fuse":
        require(os.path.exists("/dev/fuse"), "needs /dev/fuse (modprobe fuse)")
        require(
            importlib.util.find_spec("pyfuse3") is not None,
            "needs pyfuse3 and trio (pip install 'fakestor[fuse]')",
        )


@contextmanager
def machine(
    start_server: ServerFactory,
    tmp_path: Path,
    backend: str,
    data_dir: Path | None = None,
    args: Sequence[str] = (),
) -> Iterator[Host]:
    """A server with `backend`; afterwards, nothing of it may be left on the machine."""
    require_backend(backend)
    loops_before = {entry.name for entry in Path("/sys/block").glob("loop*")}
    server = start_server(*args, backend=backend, data_dir=data_dir)
    host = Host(server, tmp_path, backend)
    try:
        yield host
    finally:
        host.cleanup()
        if server.process is not None:
            assert server.stop() == 0
        leaked = ours(server.data_dir)
        dangling = our_links()
        mounts = [p for p in mount_points() if p.startswith(str(server.data_dir))]
        for device in leaked:
            loop.detach(device.path, force=True)
        for link in dangling:
            link.unlink()
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", point], check=False)
        # Loop devices the kernel made for the test are removed again once free.
        for entry in Path("/sys/block").glob("loop*"):
            if entry.name not in loops_before:
                loop.remove(int(entry.name.removeprefix("loop")))
        assert not leaked, f"leaked loop devices: {leaked}"
        assert not dangling, f"leaked links: {dangling}"
        assert not mounts, f"leaked mounts: {mounts}"
        assert "Traceback" not in server.log(), server.log()


def mount_points() -> list[str]:
    return [mount.target for mount in mount_table()]


@pytest.fixture(params=BACKENDS)
def host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    """Each test using it runs once per backend."""
    with machine(start_server, tmp_path, request.param) as running:
        yield running


@pytest.fixture
def loop_host(start_server: ServerFactory, tmp_path: Path) -> Iterator[Host]:
    with machine(start_server, tmp_path, "loopdev") as running:
        yield running


def test_attach_format_mount_write_detach_reattach_read(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    image = host.server.data_dir / "volumes" / f"{volume_id}.img"
    if host.backend == "loopdev":
        assert image.stat().st_size == GIB
        assert image.stat().st_blocks == 0  # sparse: costs nothing until written

    device = host.attach(volume_id)
    real = os.path.realpath(device)
    assert loop.direct_io(real), "loop device should use direct I/O"
    assert Path("/dev/fakestor/sdf").resolve() == Path(real)
    assert Path("/dev/fakestor/xvdf").resolve() == Path(real)
    # A new volume is blank: blkid finds nothing (exit code 2).
    assert subprocess.run(["blkid", "-p", str(device)], capture_output=True).returncode == 2
    run("mkfs.ext4", "-q", "-L", "fakestor", str(device))
    assert run("blkid", "-o", "value", "-s", "TYPE", str(device)).strip() == "ext4"
    point = host.mount(device)
    payload = os.urandom(8 * MIB)
    (point / "payload").write_bytes(payload)
    host.unmount(point)
    host.detach(volume_id)
    assert not ours(host.server.data_dir)

    device = host.attach(volume_id, "/dev/sdg")
    point = host.mount(device)
    assert (point / "payload").read_bytes() == payload
    host.unmount(point)
    host.detach(volume_id)
    ec2.delete_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[volume_id])
    assert not image.exists()
    assert volume_id not in os.listdir(
        host.server.data_dir / ("fuse/mnt/volumes" if host.backend == "fuse" else "volumes")
    )


def test_detach_of_a_mounted_device_waits_unless_forced(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2)
    device = host.attach(volume_id)
    run("mkfs.ext4", "-q", str(device))
    point = host.mount(device)
    ec2.detach_volume(VolumeId=volume_id)
    time.sleep(2.5)
    assert host.attachment_state(volume_id) == "detaching"  # as EBS: busy device waits
    host.unmount(point)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])

    device = host.attach(volume_id)
    point = host.mount(device, "again")
    real = os.path.realpath(device)
    ec2.detach_volume(VolumeId=volume_id, Force=True)
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    assert not by_id(volume_id).exists()
    # Forced: the kernel lets go of the device once the filesystem is unmounted.
    host.unmount(point)
    wait_for(lambda: not Path(f"/sys/block/{Path(real).name}/loop/backing_file").exists())


def test_snapshot_restore_and_bigger_restore(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    device = host.attach(volume_id)
    run("mkfs.ext4", "-q", str(device))
    point = host.mount(device)
    original = os.urandom(16 * MIB)
    (point / "data").write_bytes(original)
    # Snapshot while mounted: the filesystem is frozen for the copy, so it is consistent.
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    (point / "data").write_bytes(os.urandom(16 * MIB))
    host.unmount(point)
    host.detach(volume_id)

    if host.backend == "loopdev":
        snapshot_image = host.server.data_dir / "snapshots" / f"{snapshot_id}.img"
        assert snapshot_image.stat().st_blocks * 512 < 200 * MIB  # sparse: data, not size

    restored = new_volume(ec2, 2, SnapshotId=snapshot_id)
    device = host.attach(restored, "/dev/sdh")
    assert loop.size_bytes(os.path.realpath(device)) == 2 * GIB
    run("e2fsck", "-fn", str(device))
    point = host.mount(device, "restored")
    assert (
        hashlib.sha256((point / "data").read_bytes()).digest() == hashlib.sha256(original).digest()
    )
    host.unmount(point)
    host.detach(restored)


def _has_capability(number: int) -> bool:
    status = Path("/proc/self/status").read_text()
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    return bool(effective >> number & 1)


CAP_SYS_RESOURCE = 24


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_resize_online(host: Host, fstype: str) -> None:
    require(shutil.which(f"mkfs.{fstype}") is not None, f"needs mkfs.{fstype}")
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    device = host.attach(volume_id)
    real = os.path.realpath(device)
    run(f"mkfs.{fstype}", "-q", str(device))
    point = host.mount(device)
    (point / "kept").write_text("still here")
    before = shutil.disk_usage(point).total
    ec2.modify_volume(VolumeId=volume_id, Size=3)

    def state() -> str:
        found = ec2.describe_volumes_modifications(VolumeIds=[volume_id])
        return str(found["VolumesModifications"][0]["ModificationState"])

    wait_for(lambda: state() in ("optimizing", "completed"))
    assert loop.size_bytes(real) == 3 * GIB  # the attached device grew while mounted
    # Growing the filesystem is the client's job, as on EBS.
    if fstype == "xfs":
        run("xfs_growfs", str(point))
    elif _has_capability(CAP_SYS_RESOURCE):
        run("resize2fs", str(device))
    else:
        # ext4's online resize needs CAP_SYS_RESOURCE, which some sandboxes withhold:
        # grow it offline instead; the device itself still grew online.
        host.unmount(point)
        run("e2fsck", "-fp", str(device))
        run("resize2fs", str(device))
        point = host.mount(device)
    assert shutil.disk_usage(point).total > before * 2.5
    assert (point / "kept").read_text() == "still here"
    wait_for(lambda: state() == "completed")
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 3


def test_parallel_attaches_get_distinct_devices(host: Host) -> None:
    ec2 = host.ec2
    volumes = [new_volume(ec2) for _ in range(10)]
    devices = [f"/dev/sd{letter}" for letter in "fghijklmno"]

    def attach(pair: tuple[str, str]) -> None:
        client = host.server.client()
        client.attach_volume(
            VolumeId=pair[0], InstanceId=host.server.host_instance_id, Device=pair[1]
        )

    # More volumes than the eight loop devices a kernel starts with: it makes more.
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(attach, zip(volumes, devices, strict=True)))
    for volume_id in volumes:
        wait_for(lambda v=volume_id: host.attachment_state(v) == "attached")
    real = {os.path.realpath(by_id(v)) for v in volumes}
    assert len(real) == 10
    assert {d.path for d in ours(host.server.data_dir)} == real
    for volume_id in volumes:
        ec2.detach_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_available")(VolumeIds=volumes)
    assert not ours(host.server.data_dir)


def test_kill_mid_attach_then_restart_reconciles(host: Host) -> None:
    server = host.server
    ec2 = host.ec2
    attached = new_volume(ec2)
    host.attach(attached, "/dev/sdf")
    pending = new_volume(ec2)
    server.stop()
    server.extra_env["FAKESTOR_FAILPOINTS"] = "loopdev.attach.bound=60"
    server.start()
    ec2 = server.client()
    ec2.attach_volume(VolumeId=pending, InstanceId=server.host_instance_id, Device="/dev/sdg")
    # Wait until the device is bound but the attach not yet recorded, then crash.
    wait_for(lambda: "failpoint loopdev.attach.bound reached" in server.log())
    assert host.attachment_state(pending) == "attaching"
    server.kill()
    if host.backend == "loopdev":
        # Simulate a reboot for the other volume: its device and link are gone. (With
        # fuse the kill itself does that: the served files died with the server.)
        by_id(attached).unlink(missing_ok=True)
        for device in ours(server.data_dir):
            if attached in device.backing_file:
                loop.detach(device.path)

    server.extra_env.pop("FAKESTOR_FAILPOINTS")
    server.start()
    host.ec2 = ec2 = server.client()
    wait_for(lambda: host.attachment_state(pending) == "attached")
    wait_for(lambda: by_id(attached).is_symlink() and by_id(attached).exists())
    assert by_id(pending).exists()
    assert len(ours(server.data_dir)) == 2  # one device each, none doubled
    host.detach(pending)
    host.detach(attached)
    assert not ours(server.data_dir)


def test_crash_mid_delete_finishes_on_restart(loop_host: Host) -> None:
    server = loop_host.server
    volume_id = new_volume(loop_host.ec2)
    volumes_dir = server.data_dir / "volumes"
    server.stop()
    server.extra_env["FAKESTOR_FAILPOINTS"] = "loopdev.delete.renamed=60"
    server.start()
    server.client().delete_volume(VolumeId=volume_id)
    wait_for(lambda: "failpoint loopdev.delete.renamed reached" in server.log())
    server.kill()
    assert list(volumes_dir.glob("*.deleting"))
    server.extra_env.pop("FAKESTOR_FAILPOINTS")
    server.start()
    loop_host.ec2 = server.client()
    fast_waiter(loop_host.ec2, "volume_deleted")(VolumeIds=[volume_id])
    assert not list(volumes_dir.iterdir())


def test_missing_image_marks_the_volume_impaired(loop_host: Host) -> None:
    server = loop_host.server
    volume_id = new_volume(loop_host.ec2)
    server.stop()
    (server.data_dir / "volumes" / f"{volume_id}.img").unlink()
    server.start()
    loop_host.ec2 = server.client()
    volume = loop_host.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["State"] == "error"
    status = loop_host.ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "impaired"
    assert "missing" in server.log()
    loop_host.ec2.delete_volume(VolumeId=volume_id)
    fast_waiter(loop_host.ec2, "volume_deleted")(VolumeIds=[volume_id])


def test_out_of_space_fails_the_snapshot_cleanly(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    require_root_and_loop()
    data_dir = tmp_path / "small"
    data_dir.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=48m", "fakestor-test", str(data_dir))
    server = None
    try:
        server = start_server(backend="loopdev", data_dir=data_dir / "data")
        ec2 = server.client()
        volume_id = new_volume(ec2, 1)
        image = data_dir / "data" / "volumes" / f"{volume_id}.img"
        with image.open("r+b") as data:
            data.write(os.urandom(32 * MIB))
        snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]

        def snapshot_state() -> str:
            found = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
            return str(found["State"])

        wait_for(lambda: snapshot_state() == "error")
        snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        assert "no space left" in snapshot["StateMessage"]
        # No partial left (the built-in image's root snapshot is the only image there).
        assert not list((data_dir / "data" / "snapshots").glob(f"{snapshot_id}*"))
        # And the server still answers: the volume is fine.
        assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available"
    finally:
        if server is not None and server.process is not None:
            server.stop()
        run("umount", str(data_dir))


def test_fio_verifies_data_through_the_device(host: Host, tmp_path: Path) -> None:
    require(shutil.which("fio") is not None, "needs fio (apt-get install fio)")
    volume_id = new_volume(host.ec2, 1)
    device = host.attach(volume_id)
    result = subprocess.run(
        [
            "fio", "--name=verify", f"--filename={os.path.realpath(device)}",
            "--rw=randwrite", "--bs=64k", "--size=256m", "--direct=1",
            "--ioengine=libaio", "--iodepth=16", "--verify=crc32c", "--verify_fatal=1",
            "--output-format=terse",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # fio leaves its verify state file in the working directory
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    host.detach(volume_id)


def test_server_refuses_loopdev_without_root_cleanly(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root to drop privileges")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "fakestor", "server", "--backend", "loopdev",
         "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "nobody")],
        capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "needs root" in result.stderr
    assert "Traceback" not in result.stderr


def test_deleting_a_snapshot_right_after_restoring_it_keeps_the_volume(loop_host: Host) -> None:
    ec2 = loop_host.ec2
    source = new_volume(ec2, 1)
    image = loop_host.server.data_dir / "volumes" / f"{source}.img"
    payload = os.urandom(4 * MIB)
    with image.open("r+b") as data:
        data.write(payload)
    snapshot_id = ec2.create_snapshot(VolumeId=source)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    restored = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)
    ec2.delete_snapshot(SnapshotId=snapshot_id)  # queued behind the restore, as on EBS
    fast_waiter(ec2, "volume_available")(VolumeIds=[restored["VolumeId"]])
    # On ext4 a restore is lazy: its image holds the data once initialized (lazy.py).
    wait_for(lambda: not list(loop_host.server.data_dir.glob("volumes/*.img.lazy")))
    restored_image = loop_host.server.data_dir / "volumes" / f"{restored['VolumeId']}.img"
    with restored_image.open("rb") as data:
        assert data.read(4 * MIB) == payload
    wait_for(lambda: not (loop_host.server.data_dir / "snapshots" / f"{snapshot_id}.img").exists())


@pytest.fixture
def fuse_host(start_server: ServerFactory, tmp_path: Path) -> Iterator[Host]:
    with machine(start_server, tmp_path, "fuse") as running:
        yield running


def _store_bytes(host: Host) -> int:
    chunks = host.server.data_dir / "fuse" / "chunks"
    return sum(p.stat().st_blocks * 512 for p in chunks.glob("*/*") if p.is_file())


def _write_raw(device: Path, offset: int, data: bytes) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_raw(device: Path, offset: int, length: int) -> bytes:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def test_fuse_snapshots_share_every_unchanged_chunk(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2, 1)
    device = fuse_host.attach(volume_id)
    assert _store_bytes(fuse_host) == 0  # unwritten chunks take no space
    _write_raw(device, 0, os.urandom(64 * MIB))
    written = _store_bytes(fuse_host)
    assert 64 * MIB <= written < 66 * MIB

    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    assert _store_bytes(fuse_host) == written  # the snapshot copied no data

    _write_raw(device, 16 * MIB, os.urandom(8 * MIB))  # 16 chunks, aligned
    assert _store_bytes(fuse_host) - written == 8 * MIB  # grows by the changed data only

    restored = new_volume(ec2, 1, SnapshotId=snapshot_id)  # instant: shares the map
    assert _store_bytes(fuse_host) - written == 8 * MIB
    snapshot_file = fuse_host.server.data_dir / "fuse" / "mnt" / "snapshots" / snapshot_id
    with snapshot_file.open("rb") as data:
        original = data.read(64 * MIB)
    assert (
        hashlib.sha256(_read_raw(device, 0, 64 * MIB)).digest() != hashlib.sha256(original).digest()
    )
    restored_device = fuse_host.attach(restored, "/dev/sdg")
    assert _read_raw(restored_device, 0, 64 * MIB) == original

    fuse_host.detach(restored)
    fuse_host.detach(volume_id)
    for gone in (restored, volume_id):
        ec2.delete_volume(VolumeId=gone)
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[restored, volume_id])
    assert 64 * MIB <= _store_bytes(fuse_host) < 66 * MIB  # what the snapshot still holds
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    wait_for(lambda: _store_bytes(fuse_host) == 0)  # every chunk freed


def _check(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fakestor", "check", "--data-dir", str(data_dir), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_fuse_kill_during_writes_keeps_acknowledged_data(fuse_host: Host) -> None:
    server = fuse_host.server
    volume_id = new_volume(fuse_host.ec2, 1)
    device = fuse_host.attach(volume_id)
    acknowledged = os.urandom(32 * MIB)
    _write_raw(device, 0, acknowledged)  # fsync'd: must survive
    # More writes, never synced, racing with the kill.
    writer = subprocess.Popen(
        ["dd", "if=/dev/urandom", f"of={os.path.realpath(device)}", "bs=1M", "seek=64",
         "count=512", "oflag=direct"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    server.kill()
    writer.wait(timeout=60)

    report = _check(server.data_dir)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "block store consistent" in report.stdout

    server.start()
    fuse_host.ec2 = server.client()
    # The restart re-binds the attachment to a fresh device on the new mount.
    wait_for(lambda: by_id(volume_id).exists())
    assert _read_raw(by_id(volume_id), 0, 32 * MIB) == acknowledged
    assert len(ours(server.data_dir)) == 1
    fuse_host.detach(volume_id)


def _fio(device: Path, state_dir: Path, *extra: str) -> subprocess.Popen[str]:
    """fio writing 4 KiB blocks with checksums over the first 32 MiB of `device`, each
    write fsync'd (acknowledged) before the next; its verify state is kept in `state_dir`."""
    return subprocess.Popen(
        ["fio", "--name=acked", f"--filename={device}", "--rw=randwrite", "--bs=4k",
         "--size=32m", "--direct=1", "--ioengine=psync", "--fsync=1", "--verify=crc32c",
         "--verify_state_save=1", "--randseed=20", *extra],
        cwd=state_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _issued(fio_output: str) -> tuple[int, int]:
    """Reads and writes fio issued, from its report."""
    match = re.search(r"issued rwts: total=(\d+),(\d+)", fio_output)
    assert match, fio_output
    return int(match.group(1)), int(match.group(2))


def test_fuse_kill_under_fio_verify_loses_no_acknowledged_write(fuse_host: Host) -> None:
    require(shutil.which("fio") is not None, "needs fio")
    server = fuse_host.server
    volume_id = new_volume(fuse_host.ec2, 1)
    fuse_host.attach(volume_id)
    link = by_id(volume_id)
    # Chunks already the volume's own: every completed write is then in place, and what
    # fio was told is written must read back after the kill. The rest is copies on write
    # of new chunks, which only a flush (an fsync) acknowledges.
    _write_raw(link, 0, bytes(32 * MIB))
    state = fuse_host.tmp_path / "fio-state"
    state.mkdir()
    writer = _fio(Path(os.path.realpath(link)), state, "--do_verify=0")
    time.sleep(2.0)  # well inside its 8192 synced writes
    assert writer.poll() is None, writer.communicate()[0]
    server.kill()
    written = _issued(writer.communicate(timeout=60)[0])[1]
    assert 0 < written < 8192, "the kill should land while fio writes"
    assert list(state.glob("*verify.state")), "fio saved no verify state"

    server.start()
    fuse_host.ec2 = server.client()
    wait_for(lambda: by_id(volume_id).exists())
    checker = _fio(Path(os.path.realpath(link)), state, "--verify_only", "--verify_state_load=1")
    output = checker.communicate(timeout=120)[0]
    assert checker.returncode == 0, output  # fio fails on a block whose checksum is wrong
    assert _issued(output)[0] >= written - 1, output  # every acknowledged block was read back
    fuse_host.detach(volume_id)


def test_check_refuses_a_running_server_and_a_store_less_dir(
    fuse_host: Host, tmp_path: Path
) -> None:
    running = _check(fuse_host.server.data_dir)
    assert running.returncode == 1 and "stop it first" in running.stderr
    empty = _check(tmp_path / "nothing")
    assert empty.returncode == 1 and "no fuse block store" in empty.stderr


def test_backed_by_finds_exactly_the_devices_of_the_given_files(tmp_path: Path) -> None:
    require_root_and_loop()
    images = [tmp_path / f"image-{index}.img" for index in range(3)]
    for image in images:
        with image.open("wb") as new_image:
            new_image.truncate(MIB)
    devices: list[str] = []
    try:
        devices = [loop.attach(image) for image in images[:2]]
        found = loop.backed_by({str(images[1]), str(images[2])})
        assert [device.path for device in found] == [devices[1]]
        assert found[0].backing_file == str(images[1])
        assert loop.backing_file(devices[0]) == str(images[0])
        loop.detach(devices[0])
        wait_for(lambda: loop.backing_file(devices[0]) is None)  # the kernel may release late
        assert loop.backed_by({str(images[0])}) == []
    finally:
        for device in devices:
            loop.detach(device, force=True)


def test_device_layer_links_finds_and_releases_its_own_devices(tmp_path: Path) -> None:
    require_root_and_loop()
    files, dev = tmp_path / "volumes", tmp_path / "dev"
    files.mkdir()
    devices = LoopDevices(files, suffix=".img", dev_dir=dev)
    for volume_id in ("vol-1", "vol-2"):
        with devices.file_of(volume_id).open("wb") as new_file:
            new_file.truncate(MIB)
    try:
        first = devices.attach("vol-1", "/dev/sdf")
        assert devices.attach("vol-1", "/dev/sdf") == first  # bound already: same device
        second = devices.attach("vol-2", "xvdg")
        assert os.readlink(dev / "disk" / "by-id" / by_id_name("vol-1")) == first
        assert os.readlink(dev / "fakestor" / "xvdf") == first
        assert os.readlink(dev / "fakestor" / "sdg") == second
        devices.file_of("vol-2").unlink()  # deleted while bound: still found
        assert sorted((v, d.path) for v, d in devices.bound()) == [
            ("vol-1", first),
            ("vol-2", second),
        ]
        devices.detach("vol-1", force=False)
        assert [v for v, _ in devices.bound()] == ["vol-2"]
        assert sorted(p.name for p in (dev / "fakestor").iterdir()) == ["sdg", "xvdg"]
        devices.release_all("as the test ends")
        wait_for(lambda: not devices.bound())
        assert list(dev.iterdir()) == []  # the links went, and the directories made for them
    finally:
        for device in loop.bound_under(files):
            loop.detach(device.path, force=True)
