"""Data-plane faults on the fuse backend and on loopdev's policy layer, seen by the kernel
and `dd` on the attached device: I/O errors on a byte range, latency per I/O, and an
impaired volume (root, FUSE, loop)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerFactory, new_volume, wait_for
from tests.test_loopdev import Host, machine

pytestmark = pytest.mark.privileged
MIB = 1024 * 1024
FAULT_IO = "fakestor:fault/io"


# loopdev with every attach through its policy layer, so a fault set after the attach
# applies at once as on fuse (tests/test_loopdev_policy.py covers the direct path).
SERVERS = {
    "fuse": ("fuse", ("--metrics-interval", "1")),
    "loopdev": ("loopdev", ("--loopdev-policy", "always", "--metrics-interval", "1")),
}


@pytest.fixture(params=sorted(SERVERS))
def fuse_host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    backend, args = SERVERS[request.param]
    with machine(start_server, tmp_path, backend, args=args) as running:
        yield running


def dd_read(device: Path, offset_mib: int, count_mib: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "dd", f"if={device}", "of=/dev/null", "bs=1M", f"skip={offset_mib}",
            f"count={count_mib}", "iflag=direct", "status=none",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def dd_write(device: Path, offset_mib: int, count_mib: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "dd", "if=/dev/zero", f"of={device}", "bs=1M", f"seek={offset_mib}",
            f"count={count_mib}", "oflag=direct", "conv=notrunc", "status=none",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def set_io(ec2: Any, volume_id: str, value: str) -> None:
    ec2.create_tags(Resources=[volume_id], Tags=[{"Key": FAULT_IO, "Value": value}])


def clear_io(ec2: Any, volume_id: str) -> None:
    ec2.delete_tags(Resources=[volume_id], Tags=[{"Key": FAULT_IO}])


def status(ec2: Any, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    return found


def test_read_errors_reach_dd_on_the_faulted_range_only(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    assert dd_write(device, 0, 8).returncode == 0
    set_io(ec2, volume_id, "error:read:2M-4M")  # at once, on the attached device
    for mib in (2, 3):
        failed = dd_read(device, mib)
        assert failed.returncode != 0
        assert "Input/output error" in failed.stderr
    for mib in (0, 1, 4, 7):
        assert dd_read(device, mib).returncode == 0, mib
    assert dd_write(device, 2).returncode == 0  # writes are not faulted
    clear_io(ec2, volume_id)
    assert dd_read(device, 2).returncode == 0
    fuse_host.detach(volume_id)


def test_write_errors_and_latency(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    set_io(ec2, volume_id, "error:write")
    failed = dd_write(device, 5)
    assert failed.returncode != 0 and "Input/output error" in failed.stderr
    assert dd_read(device, 5).returncode == 0
    set_io(ec2, volume_id, "latency:100")
    started = time.monotonic()
    assert dd_read(device, 0, 10).returncode == 0  # ten 1 MiB I/Os, at least 100 ms each
    assert time.monotonic() - started >= 1.0
    clear_io(ec2, volume_id)
    started = time.monotonic()
    assert dd_read(device, 0, 10).returncode == 0
    assert time.monotonic() - started < 1.0
    fuse_host.detach(volume_id)


def test_impaired_blocks_io_until_enable_volume_io(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    assert status(ec2, volume_id)["VolumeStatus"]["Status"] == "ok"
    set_io(ec2, volume_id, "impaired")
    found = status(ec2, volume_id)
    assert found["VolumeStatus"]["Status"] == "impaired"
    assert {"Name": "io-enabled", "Status": "failed"} in found["VolumeStatus"]["Details"]
    assert [e["EventType"] for e in found["Events"]] == ["potential-data-inconsistency"]
    assert [a["Code"] for a in found["Actions"]] == ["enable-volume-io"]
    impaired = ec2.describe_volume_status(
        Filters=[{"Name": "volume-status.status", "Values": ["impaired"]}]
    )["VolumeStatuses"]
    assert [s["VolumeId"] for s in impaired] == [volume_id]

    result: list[subprocess.CompletedProcess[str]] = []
    reader = threading.Thread(target=lambda: result.append(dd_read(device, 1)))
    reader.start()
    time.sleep(2.0)
    assert reader.is_alive(), "I/O on an impaired volume should block"
    ec2.enable_volume_io(VolumeId=volume_id)
    reader.join(30)
    assert not reader.is_alive()
    assert result[0].returncode == 0, result[0].stderr
    found = status(ec2, volume_id)
    assert found["VolumeStatus"]["Status"] == "ok"
    assert {"Name": "io-enabled", "Status": "passed"} in found["VolumeStatus"]["Details"]
    assert found["Actions"] == []
    fuse_host.detach(volume_id)


def test_impaired_io_fails_after_its_timeout(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    set_io(ec2, volume_id, "impaired:1")
    started = time.monotonic()
    failed = dd_read(device, 0)
    assert failed.returncode != 0 and "Input/output error" in failed.stderr
    assert time.monotonic() - started >= 1.0
    clear_io(ec2, volume_id)  # DeleteTags lifts it, as EnableVolumeIO would
    assert status(ec2, volume_id)["VolumeStatus"]["Status"] == "ok"
    assert dd_read(device, 0).returncode == 0
    fuse_host.detach(volume_id)


def test_auto_enable_io_keeps_io_going_and_reports_the_event(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    ec2.modify_volume_attribute(VolumeId=volume_id, AutoEnableIO={"Value": True})
    attribute = ec2.describe_volume_attribute(VolumeId=volume_id, Attribute="autoEnableIO")
    assert attribute["AutoEnableIO"]["Value"] is True
    set_io(ec2, volume_id, "impaired")
    assert dd_read(device, 0).returncode == 0
    found = status(ec2, volume_id)
    assert {"Name": "io-enabled", "Status": "passed"} in found["VolumeStatus"]["Details"]
    assert [e["EventType"] for e in found["Events"]] == ["potential-data-inconsistency"]
    assert found["Actions"] == []
    fuse_host.detach(volume_id)


def test_io_faults_come_back_after_a_restart(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    fuse_host.attach(volume_id)
    set_io(ec2, volume_id, "error:read:0-1M")
    fuse_host.server.stop()
    fuse_host.server.start()
    fuse_host.ec2 = ec2 = fuse_host.server.client()
    wait_for(lambda: os.path.exists(f"/dev/disk/by-id/{_by_id(volume_id)}"))
    device = Path("/dev/disk/by-id") / _by_id(volume_id)
    wait_for(lambda: dd_read(device, 1).returncode == 0, timeout=30)
    assert dd_read(device, 0).returncode != 0
    fuse_host.detach(volume_id)


def _by_id(volume_id: str) -> str:
    from fakestor.device_names import by_id_name

    return by_id_name(volume_id)


def test_server_stops_promptly_while_io_waits_on_an_impaired_volume(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    set_io(ec2, volume_id, "impaired")
    reader = subprocess.Popen(
        ["dd", f"if={device}", "of=/dev/null", "bs=1M", "count=1", "iflag=direct"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)
        assert reader.poll() is None
        started = time.monotonic()
        assert fuse_host.server.stop() == 0
        assert time.monotonic() - started < 15
        assert reader.wait(timeout=30) != 0  # the device went with the server: an error
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    fuse_host.server.start()  # for the fixture's cleanup, which checks nothing is left
    fuse_host.ec2 = ec2 = fuse_host.server.client()
    ec2.enable_volume_io(VolumeId=volume_id)


def test_forced_detach_of_an_impaired_volume_with_io_waiting(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    set_io(ec2, volume_id, "impaired")
    reader = subprocess.Popen(
        ["dd", f"if={device}", "of=/dev/null", "bs=1M", "count=1", "iflag=direct"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)
        started = time.monotonic()
        fuse_host.detach(volume_id, force=True)
        assert reader.wait(timeout=30) != 0  # the waiting read fails with the device
        assert time.monotonic() - started < 10
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def test_a_gone_device_fails_the_filesystem_mounted_on_it(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2)
    device = fuse_host.attach(volume_id)
    subprocess.run(["mkfs.ext4", "-q", str(device)], check=True)
    point = fuse_host.mount(device)
    (point / "before").write_bytes(b"x" * MIB)
    subprocess.run(["sync"], check=True)
    set_io(ec2, volume_id, "gone")
    failed = dd_read(device, 0)
    assert failed.returncode != 0 and "Input/output error" in failed.stderr
    written = subprocess.run(
        ["dd", "if=/dev/zero", f"of={point / 'after'}", "bs=1M", "count=1", "oflag=direct",
         "status=none"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert written.returncode != 0 and "Input/output error" in written.stderr
    # The attachment stays `attached`, as EC2 would still report it.
    assert fuse_host.attachment_state(volume_id) == "attached"
    clear_io(ec2, volume_id)
    assert dd_read(device, 0).returncode == 0
    fuse_host.unmount(point)
    fuse_host.detach(volume_id)


def io_performance(ec2: Any, volume_id: str) -> str:
    found = status(ec2, volume_id)
    details = {d["Name"]: d["Status"] for d in found["VolumeStatus"]["Details"]}
    assert [a["IoPerformance"] for a in found["AttachmentStatuses"]] == [details["io-performance"]]
    return details["io-performance"]


def test_io_performance_of_an_io1_volume_is_stalled_while_impaired(fuse_host: Host) -> None:
    ec2 = fuse_host.ec2
    volume_id = new_volume(ec2, 10, VolumeType="io1", Iops=500)
    device = fuse_host.attach(volume_id)
    assert dd_read(device, 0, 4).returncode == 0
    wait_for(lambda: io_performance(ec2, volume_id) == "normal", timeout=10)
    set_io(ec2, volume_id, "impaired")
    result: list[subprocess.CompletedProcess[str]] = []
    reader = threading.Thread(target=lambda: result.append(dd_read(device, 1)))
    reader.start()
    # Waiting I/O and none delivered, sampled once a second: EC2's `stalled`.
    wait_for(lambda: io_performance(ec2, volume_id) == "stalled", timeout=10)
    ec2.enable_volume_io(VolumeId=volume_id)
    reader.join(30)
    assert result and result[0].returncode == 0, result
    wait_for(lambda: io_performance(ec2, volume_id) == "normal", timeout=10)
    fuse_host.detach(volume_id)
