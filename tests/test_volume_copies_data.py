"""Volume copies and initialization on real data (loopdev and fuse, root only): a copy of a
mounted volume holds the same bytes and a clean filesystem; a restore at a provisioned rate
is seen initializing while the backend reads its data, then completed; a restore from a
snapshot with fast snapshot restore enabled is initialized at once."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ZONE, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_snapshot_lifecycle import DAY_A_SECOND, _fsr
from tests.test_api_volume_copies import _details, _initialization
from tests.test_loopdev import BACKENDS, GIB, MIB, Host, _read_raw, _write_raw, machine, run
from tests.test_transitions import _states

pytestmark = pytest.mark.privileged

# Initialization at the rate itself: 100 MiB/s reads 100 MiB of data a second.
AT_THE_RATE = ("--time-scale", "1")


@pytest.fixture(params=BACKENDS)
def host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    with machine(functools.partial(start_server, *AT_THE_RATE), tmp_path, request.param) as running:
        yield running


@pytest.fixture(params=BACKENDS)
def fast_host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    with machine(
        functools.partial(start_server, *DAY_A_SECOND), tmp_path, request.param
    ) as running:
        yield running


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _snapshot(ec2: Any, volume_id: str) -> str:
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def test_copy_of_a_mounted_volume_has_identical_data(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    device = host.attach(volume_id)
    run("mkfs.ext4", "-q", str(device))
    point = host.mount(device)
    original = os.urandom(24 * MIB)
    (point / "data").write_bytes(original)
    # Copied while mounted: the filesystem is frozen for the copy, so it is consistent.
    copy = ec2.copy_volumes(SourceVolumeId=volume_id, Size=2)["Volumes"][0]["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[copy])
    (point / "data").write_bytes(os.urandom(24 * MIB))  # after the copy: not in it

    copied = host.attach(copy, "/dev/sdg")
    assert int(run("blockdev", "--getsize64", str(copied)).strip()) == 2 * GIB
    run("e2fsck", "-fn", str(copied))
    copy_point = host.mount(copied, "copy")
    assert _digest((copy_point / "data").read_bytes()) == _digest(original)
    (copy_point / "only-in-copy").write_text("copy")  # the copy is a volume of its own
    assert not (point / "only-in-copy").exists()
    wait_for(lambda: _initialization(ec2, copy)[0] == "completed", timeout=30)
    assert _details(ec2, copy) == {"InitializationType": "volume-copy", "Progress": 100}
    assert ec2.describe_volumes(VolumeIds=[copy])["Volumes"][0]["SourceVolumeId"] == volume_id


def test_restore_at_a_provisioned_rate_initializes_while_in_use(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    device = host.attach(volume_id)
    written = os.urandom(160 * MIB)  # 1.6 s of reading at 100 MiB/s
    _write_raw(device, 64 * MIB, written)
    snapshot_id = _snapshot(ec2, volume_id)

    restored = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=100)
    progress: list[int] = []

    def sample() -> str:
        state, details = _initialization(ec2, restored)
        assert details is not None and details["InitializationType"] == "provisioned-rate"
        progress.append(details["Progress"])
        return str(state)

    assert _states(sample, "completed", timeout=60) == ["initializing", "completed"]
    assert progress == sorted(progress) and progress[-1] == 100
    assert len({p for p in progress if 0 < p < 100}) >= 3, progress  # the reads moved it
    restored_device = host.attach(restored, "/dev/sdh")
    assert _digest(_read_raw(restored_device, 64 * MIB, len(written))) == _digest(written)


def test_volume_in_use_while_initializing(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    written = os.urandom(200 * MIB)  # 2 s of reading at 100 MiB/s
    _write_raw(host.attach(volume_id), 0, written)
    snapshot_id = _snapshot(ec2, volume_id)
    restored = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=100)
    device = host.attach(restored, "/dev/sdh")
    assert _initialization(ec2, restored)[0] == "initializing"
    changed = os.urandom(MIB)
    _write_raw(device, 100 * MIB, changed)  # written while the pass reads around it
    wait_for(lambda: _initialization(ec2, restored)[0] == "completed", timeout=60)
    assert _read_raw(device, 100 * MIB, MIB) == changed
    assert _digest(_read_raw(device, 0, 100 * MIB)) == _digest(written[: 100 * MIB])
    assert _digest(_read_raw(device, 101 * MIB, 99 * MIB)) == _digest(written[101 * MIB :])


def test_fast_snapshot_restore_is_initialized_at_once(fast_host: Host) -> None:
    ec2 = fast_host.ec2
    volume_id = new_volume(ec2, 1)
    written = os.urandom(32 * MIB)
    _write_raw(fast_host.attach(volume_id), 0, written)
    snapshot_id = _snapshot(ec2, volume_id)
    ec2.enable_fast_snapshot_restores(SourceSnapshotIds=[snapshot_id], AvailabilityZones=[ZONE])
    wait_for(lambda: _fsr(ec2, snapshot_id) == "enabled", timeout=30)

    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)["VolumeId"]
    assert _initialization(ec2, restored) == (
        "completed",
        {"InitializationType": "default", "Progress": 100},
    )
    fast_waiter(ec2, "volume_available")(VolumeIds=[restored])
    assert ec2.describe_volumes(VolumeIds=[restored])["Volumes"][0]["FastRestored"] is True
    device = fast_host.attach(restored, "/dev/sdh")
    assert _digest(_read_raw(device, 0, len(written))) == _digest(written)


def test_initialization_resumes_after_a_crash(host: Host) -> None:
    ec2 = host.ec2
    volume_id = new_volume(ec2, 1)
    written = os.urandom(200 * MIB)  # 2 s of reading at 100 MiB/s
    _write_raw(host.attach(volume_id), 0, written)
    host.detach(volume_id)
    snapshot_id = _snapshot(ec2, volume_id)
    restored = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=100)
    wait_for(lambda: _details(ec2, restored)["Progress"] >= 20, timeout=30)
    before = _details(ec2, restored)["Progress"]
    host.server.kill()

    host.server.start()
    host.ec2 = ec2 = host.server.client()
    state, details = _initialization(ec2, restored)
    assert details is not None and details["Progress"] >= before
    assert state == "completed" or details["Progress"] < 100
    wait_for(lambda: _initialization(ec2, restored)[0] == "completed", timeout=60)
    device = host.attach(restored)
    assert _digest(_read_raw(device, 0, len(written))) == _digest(written)
