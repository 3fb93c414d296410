"""A loopdev restore on a data dir without reflinks (ext4) is lazy (root, loop, FUSE): the
volume is available at once, its initialization pass copies the snapshot's data at the
rate, a filesystem mounted meanwhile reads the snapshot's bytes through the policy layer
and its writes survive the pass, and a kill -9 of the server mid-pass resumes."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends import loop
from tests.conftest import ServerFactory, fast_waiter, new_volume, require, wait_for
from tests.test_api_volume_copies import _details, _initialization
from tests.test_loopdev import GIB, MIB, Host, _write_raw, by_id, machine, run

pytestmark = pytest.mark.privileged

RATE = 100  # MiB/s, at `--time-scale 1`


@pytest.fixture
def lazy_host(start_server: ServerFactory, tmp_path: Path) -> Iterator[Host]:
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse (modprobe fuse)")
    fstype = run("stat", "-f", "-c", "%T", str(tmp_path)).strip()
    # ext4 reports ext2/ext3 to stat; xfs and btrfs clone instead (no lazy restore).
    require(fstype.startswith("ext"), f"needs a data dir on ext4 (tmp is on {fstype})")
    with machine(functools.partial(start_server, "--time-scale", "1"), tmp_path, "loopdev") as h:
        yield h


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_uncached(device: Path, offset: int, length: int) -> bytes:
    """Read the device's bytes from its backing, not the page cache of an earlier read."""
    fd = os.open(device, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _snapshot_of(host: Host, fill: bytes, *, filesystem: bool) -> str:
    """A snapshot of a 1 GiB volume holding `fill` (in a file `data`, or raw at 0)."""
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    device = host.attach(volume_id)
    if filesystem:
        run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(device))
        point = host.mount(device)
        (point / "data").write_bytes(fill)
        host.unmount(point)
    else:
        _write_raw(device, 0, fill)
    host.detach(volume_id)
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def _sample(ec2: Any, volume_id: str, progress: list[int]) -> None:
    """Record the initialization's progress until it is completed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state, details = _initialization(ec2, volume_id)
        progress.append(details["Progress"])
        if state == "completed":
            return
        time.sleep(0.1)


def _relinked(host: Host, volume_id: str) -> bool:
    """Whether the volume's device is bound through the running server's layer and reads."""
    link = by_id(volume_id)
    try:
        backing = loop.backing_file(os.path.realpath(link))
        _read_uncached(link, 0, 4096)
    except OSError:
        return False
    return backing == str(host.server.data_dir / "policy" / "mnt" / volume_id)


def _sidecars(host: Host, volume_id: str) -> list[Path]:
    volumes = host.server.data_dir / "volumes"
    return sorted(volumes.glob(f"{volume_id}.img.*"))


def test_a_lazy_restore_is_usable_at_once_and_copied_at_the_rate(lazy_host: Host) -> None:
    ec2 = lazy_host.ec2
    original = os.urandom(300 * MIB)
    snapshot_id = _snapshot_of(lazy_host, original, filesystem=True)

    started = time.monotonic()
    restored = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=RATE)
    available = time.monotonic() - started
    image = lazy_host.server.data_dir / "volumes" / f"{restored}.img"
    # Available before its data is copied: the image holds little of the 300 MiB yet.
    assert image.stat().st_blocks * 512 < 150 * MIB, image.stat().st_blocks
    assert [p.name.rsplit(".", 1)[1] for p in _sidecars(lazy_host, restored)] == [
        "lazy",
        "source",
    ]
    assert _initialization(ec2, restored)[0] == "initializing"
    progress: list[int] = []
    sampler = threading.Thread(target=_sample, args=(lazy_host.server.client(), restored, progress))
    sampler.start()

    device = lazy_host.attach(restored, "/dev/sdh")
    point = lazy_host.mount(device, "restored")
    assert _digest((point / "data").read_bytes()) == _digest(original)  # from the snapshot
    added = os.urandom(40 * MIB)
    (point / "added").write_bytes(added)
    with (point / "data").open("r+b") as data:  # over blocks not copied yet
        data.write(b"changed while restoring")
    run("sync", "-f", str(point / "added"))
    changed = b"changed while restoring" + original[len(b"changed while restoring") :]

    sampler.join(120)
    elapsed = time.monotonic() - started
    data = len(original) + len(added)
    print(f"available after {available:.2f} s; copied {data // MIB} MiB in {elapsed:.2f} s")
    assert elapsed >= 0.6 * (len(original) / MIB) / RATE, elapsed  # bounded by the rate
    assert progress == sorted(progress) and progress[-1] == 100
    assert len({p for p in progress if 0 < p < 100}) >= 3, progress
    assert _sidecars(lazy_host, restored) == []  # an ordinary image now

    # What the filesystem reads after the pass, from the image alone.
    lazy_host.unmount(point)
    lazy_host.detach(restored)
    device = lazy_host.attach(restored, "/dev/sdh")
    run("e2fsck", "-fn", str(device))
    point = lazy_host.mount(device, "restored")
    assert _digest((point / "data").read_bytes()) == _digest(changed)
    assert _digest((point / "added").read_bytes()) == _digest(added)
    lazy_host.unmount(point)
    lazy_host.detach(restored)


def test_a_lazy_restore_resumes_after_a_kill_of_the_server(lazy_host: Host) -> None:
    ec2 = lazy_host.ec2
    original = os.urandom(400 * MIB)  # 4 s at the rate
    snapshot_id = _snapshot_of(lazy_host, original, filesystem=False)
    restored = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=RATE)
    device = lazy_host.attach(restored, "/dev/sdh")
    assert loop.backing_file(os.path.realpath(device)) == str(
        lazy_host.server.data_dir / "policy" / "mnt" / restored
    )  # through the layer, whatever --loopdev-policy says
    written = os.urandom(MIB + 4096)  # across blocks the pass has not reached
    _write_raw(device, 380 * MIB - 4096, written)  # acknowledged: fsync'd
    wait_for(lambda: _details(ec2, restored)["Progress"] >= 20, timeout=30)
    before = _details(ec2, restored)["Progress"]
    lazy_host.server.kill()

    lazy_host.server.start()
    lazy_host.ec2 = ec2 = lazy_host.server.client()
    state, details = _initialization(ec2, restored)
    assert details is not None and details["Progress"] >= before
    assert state == "initializing", state  # resumed, not started over nor skipped
    # The attachment is relinked through a new layer, while the pass goes on.
    wait_for(lambda: _relinked(lazy_host, restored), timeout=30)
    device = by_id(restored)
    later = os.urandom(MIB)
    _write_raw(device, 390 * MIB, later)
    wait_for(lambda: _initialization(ec2, restored)[0] == "completed", timeout=60)
    assert _sidecars(lazy_host, restored) == []
    expected = bytearray(original)
    expected[380 * MIB - 4096 : 381 * MIB] = written
    expected[390 * MIB : 391 * MIB] = later
    assert _digest(_read_uncached(device, 0, len(expected))) == _digest(bytes(expected))
    lazy_host.detach(restored)
    device = lazy_host.attach(restored, "/dev/sdh")  # directly now: from the image alone
    assert loop.backing_file(os.path.realpath(device)).endswith(f"volumes/{restored}.img")
    assert _digest(_read_uncached(device, 0, len(expected))) == _digest(bytes(expected))
    assert _read_uncached(device, len(expected), MIB) == bytes(MIB)
    lazy_host.detach(restored)


def test_a_snapshot_of_a_lazy_restore_copies_the_rest_first(lazy_host: Host) -> None:
    ec2 = lazy_host.ec2
    original = os.urandom(128 * MIB)
    snapshot_id = _snapshot_of(lazy_host, original, filesystem=False)
    restored = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=RATE)
    ec2.delete_snapshot(SnapshotId=snapshot_id)  # the restore keeps its own link to the data
    second = str(ec2.create_snapshot(VolumeId=restored)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[second])
    assert _sidecars(lazy_host, restored) == []  # the snapshot finished the copy
    again = new_volume(ec2, 1, SnapshotId=second)
    device = lazy_host.attach(again, "/dev/sdg")
    assert _digest(_read_uncached(device, 0, len(original))) == _digest(original)
    assert int(run("blockdev", "--getsize64", str(device)).strip()) == GIB
    lazy_host.detach(again)


def test_a_fast_snapshot_restore_is_whole_at_once(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """From a snapshot with fast snapshot restore enabled in its zone, EBS delivers the
    volume fully initialized: no lazy copy is left, and the image holds the data."""
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse (modprobe fuse)")
    fstype = run("stat", "-f", "-c", "%T", str(tmp_path)).strip()
    require(fstype.startswith("ext"), f"needs a data dir on ext4 (tmp is on {fstype})")
    day_a_second = functools.partial(start_server, "--time-scale", "86400")
    with machine(day_a_second, tmp_path, "loopdev") as host:
        ec2 = host.ec2
        original = os.urandom(64 * MIB)
        snapshot_id = _snapshot_of(host, original, filesystem=False)
        ec2.enable_fast_snapshot_restores(
            SourceSnapshotIds=[snapshot_id], AvailabilityZones=["us-east-1a"]
        )

        def enabled() -> bool:
            found = ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]
            return bool(found) and found[0]["State"] == "enabled"

        wait_for(enabled, timeout=60)
        restored = new_volume(ec2, 1, SnapshotId=snapshot_id)
        volume = ec2.describe_volumes(VolumeIds=[restored])["Volumes"][0]
        assert volume["FastRestored"] is True
        assert _sidecars(host, restored) == []  # copied whole before `available`
        image = host.server.data_dir / "volumes" / f"{restored}.img"
        with image.open("rb") as data:
            assert _digest(data.read(len(original))) == _digest(original)
        device = host.attach(restored)
        assert not _relinked(host, restored)  # nothing to read through: attached directly
        assert _digest(_read_uncached(device, 0, len(original))) == _digest(original)
        host.detach(restored)
