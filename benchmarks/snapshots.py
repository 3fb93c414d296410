"""Snapshot and restore cost against data written, per backend, vs `cp --sparse=always`."""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import drop_caches, fakestor_server, poll, scratch
from benchmarks.loopdev import write_data
from fakestor.device_names import by_id_path

MIB = 1024 * 1024
GIB = 1024 * MIB


Case = tuple[int, int]  # (volume GiB, MiB written)


@dataclass
class SnapshotFigures:
    """Seconds per run, keyed by (target, case)."""

    snapshot: dict[tuple[str, Case], list[float]] = field(default_factory=dict)
    restore: dict[tuple[str, Case], list[float]] = field(default_factory=dict)


def _state(ec2: Any, volume_id: str) -> str:
    return str(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"])


def _is_state(ec2: Any, kind: str, resource_id: str, wanted: str) -> bool:
    if kind == "snapshot":
        return _snapshot_state(ec2, resource_id) == wanted
    return _state(ec2, resource_id) == wanted


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    return str(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"])


def _one_volume(
    ec2: Any, host: str, backend: str, case: Case, runs: int, figures: SnapshotFigures
) -> None:
    """Write the case's data into a new volume, then time snapshot and restore `runs` times."""
    size_gib, mib = case
    volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=size_gib)["VolumeId"]
    poll(lambda: _state(ec2, volume_id) == "available")
    ec2.attach_volume(VolumeId=volume_id, InstanceId=host, Device="/dev/sdf")
    link = str(by_id_path(volume_id))
    poll(lambda: Path(link).exists())
    write_data(link, size_gib * GIB, mib * MIB)
    ec2.detach_volume(VolumeId=volume_id)
    poll(lambda: _state(ec2, volume_id) == "available")
    for _ in range(runs):
        drop_caches()
        start = time.perf_counter()
        snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
        poll(partial(_is_state, ec2, "snapshot", snapshot_id, "completed"), 600, 0.005)
        figures.snapshot.setdefault((backend, case), []).append(time.perf_counter() - start)
        drop_caches()
        start = time.perf_counter()
        restored = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)[
            "VolumeId"
        ]
        poll(partial(_is_state, ec2, "volume", restored, "available"), 600, 0.005)
        figures.restore.setdefault((backend, case), []).append(time.perf_counter() - start)
        ec2.delete_volume(VolumeId=restored)
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    ec2.delete_volume(VolumeId=volume_id)
    gone = [{"Name": "volume-id", "Values": [volume_id]}]
    poll(lambda: not ec2.describe_volumes(Filters=gone)["Volumes"])


def _copy(source: Path, target: Path) -> float:
    """Seconds for `cp --sparse=always` and `sync` of the copy, from a cold page cache."""
    drop_caches()
    start = time.perf_counter()
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)
    subprocess.run(["sync", str(target)], check=True)
    return time.perf_counter() - start


def _by_hand(base: Path, case: Case, runs: int, figures: SnapshotFigures) -> None:
    """A snapshot by hand is a copy of the image; a restore, a copy of that copy."""
    size_gib, mib = case
    image, copy, restored = base / "by-hand.img", base / "copy.img", base / "restored.img"
    with image.open("wb") as new_image:
        new_image.truncate(size_gib * GIB)
    write_data(str(image), size_gib * GIB, mib * MIB)
    for _ in range(runs):
        figures.snapshot.setdefault(("cp", case), []).append(_copy(image, copy))
        figures.restore.setdefault(("cp", case), []).append(_copy(copy, restored))
        copy.unlink()
        restored.unlink()
    image.unlink()


def measure_snapshots(work_dir: Path, cases: list[Case], runs: int) -> SnapshotFigures:
    figures = SnapshotFigures()
    with scratch(work_dir, "fakestor-snap-") as base:
        for backend in ("loopdev", "fuse"):
            with fakestor_server(base / f"data-{backend}", "--backend", backend) as server:
                ec2, host = server.client(), server.instance_id()
                for case in cases:
                    _one_volume(ec2, host, backend, case, runs, figures)
        for case in cases:
            _by_hand(base, case, runs, figures)
    return figures


def snapshot_summary(figures: SnapshotFigures, cases: list[Case]) -> str:
    def cell(values: list[float]) -> str:
        median, low, high = (
            1000 * x for x in (statistics.median(values), min(values), max(values))
        )
        return f"{median:.0f} ms ({low:.0f}-{high:.0f})"

    def against(values: list[float], baseline: list[float]) -> str:
        return f"{cell(values)}, {statistics.median(values) / statistics.median(baseline):.2f}x"

    lines = [
        "| volume, data written | loopdev snapshot | fuse snapshot | `cp` + sync "
        "| loopdev restore | fuse restore | `cp` back + sync |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        row = [f"{case[0]} GiB, {case[1]} MiB written"]
        for kind in (figures.snapshot, figures.restore):
            baseline = kind[("cp", case)]
            row += [against(kind[(backend, case)], baseline) for backend in ("loopdev", "fuse")]
            row.append(cell(baseline))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
