"""Snapshot and restore cost against data written, per backend, vs `cp --sparse=always`."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import fakestor_server, poll
from benchmarks.loopdev import write_data

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class SnapshotFigures:
    """Seconds per run, keyed by (target, MiB written)."""

    snapshot: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    restore: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def _host(url: str) -> str:
    with urllib.request.urlopen(f"{url}/latest/meta-data/instance-id") as reply:
        return str(reply.read().decode())


def _state(ec2: Any, volume_id: str) -> str:
    return str(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"])


def _is_state(ec2: Any, kind: str, resource_id: str, wanted: str) -> bool:
    if kind == "snapshot":
        return _snapshot_state(ec2, resource_id) == wanted
    return _state(ec2, resource_id) == wanted


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    return str(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"])


def _one_volume(
    ec2: Any, host: str, backend: str, size_gib: int, mib: int, runs: int, figures: SnapshotFigures
) -> None:
    """Write `mib` into a new volume, then time snapshot and restore `runs` times."""
    volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=size_gib)["VolumeId"]
    poll(lambda: _state(ec2, volume_id) == "available")
    ec2.attach_volume(VolumeId=volume_id, InstanceId=host, Device="/dev/sdf")
    link = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + volume_id.replace("-", "")
    poll(lambda: Path(link).exists())
    write_data(link, size_gib * GIB, mib * MIB)
    ec2.detach_volume(VolumeId=volume_id)
    poll(lambda: _state(ec2, volume_id) == "available")
    for _ in range(runs):
        start = time.perf_counter()
        snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
        poll(partial(_is_state, ec2, "snapshot", snapshot_id, "completed"), 600, 0.005)
        figures.snapshot.setdefault((backend, mib), []).append(time.perf_counter() - start)
        start = time.perf_counter()
        restored = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)[
            "VolumeId"
        ]
        poll(partial(_is_state, ec2, "volume", restored, "available"), 600, 0.005)
        figures.restore.setdefault((backend, mib), []).append(time.perf_counter() - start)
        ec2.delete_volume(VolumeId=restored)
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=volume_id)
    gone = [{"Name": "volume-id", "Values": [volume_id]}]
    poll(lambda: not ec2.describe_volumes(Filters=gone)["Volumes"])


def _by_hand(base: Path, size_gib: int, mib: int, runs: int, figures: SnapshotFigures) -> None:
    image = base / "by-hand.img"
    with image.open("wb") as new_image:
        new_image.truncate(size_gib * GIB)
    write_data(str(image), size_gib * GIB, mib * MIB)
    copy = base / "copy.img"
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
        subprocess.run(["sync", str(copy)], check=True)
        figures.snapshot.setdefault(("cp", mib), []).append(time.perf_counter() - start)
        copy.unlink()
    image.unlink()


def measure_snapshots(
    work_dir: Path, size_gib: int, written_mib: list[int], runs: int
) -> SnapshotFigures:
    figures = SnapshotFigures()
    base = Path(tempfile.mkdtemp(prefix="fakestor-snap-", dir=work_dir))
    try:
        for backend in ("loopdev", "fuse"):
            with fakestor_server(base / f"data-{backend}", "--backend", backend) as server:
                ec2, host = server.client(), _host(server.url)
                for mib in written_mib:
                    _one_volume(ec2, host, backend, size_gib, mib, runs, figures)
        for mib in written_mib:
            _by_hand(base, size_gib, mib, runs, figures)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return figures


def snapshot_summary(figures: SnapshotFigures, size_gib: int, written_mib: list[int]) -> str:
    def cell(values: list[float]) -> str:
        median, low, high = (
            1000 * x for x in (statistics.median(values), min(values), max(values))
        )
        return f"{median:.0f} ms ({low:.0f}-{high:.0f})"

    lines = [
        f"| data written to a {size_gib} GiB volume | loopdev snapshot | fuse snapshot "
        "| `cp --sparse=always` + sync | loopdev restore | fuse restore |",
        "|---|---|---|---|---|---|",
    ]
    for mib in written_mib:
        cp = statistics.median(figures.snapshot[("cp", mib)])

        def against_cp(values: list[float], cp: float = cp) -> str:
            return f"{cell(values)}, {statistics.median(values) / cp:.2f}x"

        row = [f"{mib} MiB"]
        row += [against_cp(figures.snapshot[(backend, mib)]) for backend in ("loopdev", "fuse")]
        row.append(cell(figures.snapshot[("cp", mib)]))
        # Restoring by hand is the same copy, back from the snapshot image.
        row += [against_cp(figures.restore[(backend, mib)]) for backend in ("loopdev", "fuse")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
