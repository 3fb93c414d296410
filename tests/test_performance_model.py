"""EBS's performance model on the fuse backend's data path and loopdev's policy layer,
measured with fio on the attached device: gp3's 3,000 IOPS and a live ModifyVolume, gp2
bursting until its bucket is empty, and the per-volume tag turning the model on and off."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ZONE, ServerFactory, fast_waiter, require, wait_for
from tests.test_loopdev import Host, machine

pytestmark = pytest.mark.privileged


@pytest.fixture(params=["fuse", "loopdev"])
def shaped(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    """A server with the model on; a loopdev volume goes through its policy layer."""
    require(shutil.which("fio") is not None, "needs fio (apt-get install fio)")
    args = ("--performance-model", "--credit-time-scale", "1000", "--metrics-interval", "1")
    with machine(start_server, tmp_path, request.param, args=args) as running:
        yield running


def fio_iops(
    device: Path, seconds: float = 3, depth: int = 16, ios: list[int] | None = None
) -> float:
    result = subprocess.run(
        ["fio", "--name=model", f"--filename={device}", "--rw=randread", "--bs=4k",
         "--direct=1", "--ioengine=libaio", f"--iodepth={depth}", "--time_based",
         f"--runtime={seconds}", "--size=256m", "--output-format=json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    read = json.loads(result.stdout)["jobs"][0]["read"]
    if ios is not None:
        ios.append(int(read["total_ios"]))
    return float(read["iops"])


def fio_iops_per_second(device: Path, seconds: int, log_dir: Path) -> list[float]:
    """One fio run, its IOPS second by second (fio's own log, averaged over each second)."""
    prefix = log_dir / "rate"
    subprocess.run(
        ["fio", "--name=model", f"--filename={device}", "--rw=randread", "--bs=4k",
         "--direct=1", "--ioengine=libaio", "--iodepth=8", "--time_based",
         f"--runtime={seconds}", "--size=256m", f"--write_iops_log={prefix}",
         "--log_avg_msec=1000", "--output-format=json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    lines = next(log_dir.glob("rate_iops*.log")).read_text().splitlines()
    return [float(line.split(",")[1]) for line in lines]


def volume(host: Host, **kwargs: Any) -> tuple[str, Path]:
    volume_id = host.ec2.create_volume(AvailabilityZone=ZONE, **kwargs)["VolumeId"]
    fast_waiter(host.ec2, "volume_available")(VolumeIds=[volume_id])
    return volume_id, host.attach(volume_id)


def test_gp3_runs_at_3000_iops_and_at_6000_after_modify_volume(shaped: Host) -> None:
    volume_id, device = volume(shaped, Size=20, VolumeType="gp3")
    since = datetime.now(UTC) - timedelta(minutes=1)
    time.sleep(1.5)  # the metrics sampler's first reading of the new device
    ios: list[int] = []
    assert fio_iops(device, ios=ios) == pytest.approx(3000, rel=0.1)
    time.sleep(2.5)  # its next readings
    # CloudWatch counts what fio did: the device's own counters, read every second.
    assert sum(_statistic(shaped, volume_id, "VolumeReadOps", since, "Sum")) == ios[0]
    shaped.ec2.modify_volume(VolumeId=volume_id, Iops=6000)
    wait_for(
        lambda: shaped.ec2.describe_volumes_modifications(VolumeIds=[volume_id])[
            "VolumesModifications"][0]["ModificationState"] in ("optimizing", "completed"),
    )  # fmt: skip
    assert fio_iops(device) == pytest.approx(6000, rel=0.1)
    shaped.detach(volume_id)


def test_gp2_bursts_then_drops_to_its_baseline(shaped: Host) -> None:
    # 10 GiB: baseline 100 IOPS (3 per GiB, at least 100), bursting to 3,000. With the
    # buckets 1,000 times smaller, 5,400 credits last about 2 s of burst.
    volume_id, device = volume(shaped, Size=10, VolumeType="gp2")
    since = datetime.now(UTC) - timedelta(minutes=1)
    rates = fio_iops_per_second(device, 6, shaped.tmp_path)
    assert rates[0] > 2000, rates
    assert rates[-1] == pytest.approx(100, rel=0.2), rates
    assert rates[-2] == pytest.approx(100, rel=0.2), rates
    time.sleep(2)
    points = _statistic(shaped, volume_id, "BurstBalance", since, "Minimum")
    assert points and min(points) < 5, points  # CloudWatch saw the bucket empty
    shaped.detach(volume_id)


def test_the_tag_turns_the_model_on_and_off_for_one_volume(shaped: Host) -> None:
    volume_id, device = volume(shaped, Size=10, VolumeType="io1", Iops=300)
    assert fio_iops(device, seconds=2) == pytest.approx(300, rel=0.1)
    shaped.ec2.create_tags(
        Resources=[volume_id], Tags=[{"Key": "fakestor:performance-model", "Value": "off"}]
    )
    assert fio_iops(device, seconds=2) > 600  # unlimited: whatever the path gives
    shaped.ec2.delete_tags(Resources=[volume_id], Tags=[{"Key": "fakestor:performance-model"}])
    assert fio_iops(device, seconds=2) == pytest.approx(300, rel=0.1)
    with pytest.raises(Exception, match="takes the value 'on' or 'off'"):
        shaped.ec2.create_tags(
            Resources=[volume_id], Tags=[{"Key": "fakestor:performance-model", "Value": "fast"}]
        )
    shaped.detach(volume_id)


def _statistic(host: Host, volume_id: str, metric: str, since: datetime, stat: str) -> list[float]:
    from tests.test_cloudwatch import cloudwatch

    answer = cloudwatch(host.server.url).get_metric_statistics(
        Namespace="AWS/EBS", MetricName=metric,
        Dimensions=[{"Name": "VolumeId", "Value": volume_id}],
        StartTime=since, EndTime=datetime.now(UTC) + timedelta(minutes=1), Period=1,
        Statistics=[stat],
    )  # fmt: skip
    return [point[stat] for point in answer["Datapoints"]]
