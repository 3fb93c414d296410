"""The data path: fio on an ext4 filesystem on a fakestor volume, per backend (and loopdev
through its policy layer, no fault and no model: the layer's own cost), vs a plain file.

Each target gets the same four fio jobs (direct I/O, libaio, queue depth 16):
1 MiB sequential write and read, 4 KiB random write and read. The plain file
lives on the filesystem of the data dir, which is what both backends store on.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import fakestor_server, poll, scratch
from fakestor.device_names import by_id_path

JOBS = {
    "seq write 1 MiB": ("write", "1m"),
    "seq read 1 MiB": ("read", "1m"),
    "rand write 4 KiB": ("randwrite", "4k"),
    "rand read 4 KiB": ("randread", "4k"),
}


LAYER = "loopdev via policy layer (ext4)"
TARGETS = [  # (column, data dir name, server arguments)
    ("loopdev volume (ext4)", "loopdev", ("--backend", "loopdev")),
    (LAYER, "layer", ("--backend", "loopdev", "--loopdev-policy", "always")),
    ("fuse volume (ext4)", "fuse", ("--backend", "fuse")),
]


@dataclass
class Rates:
    """MiB/s per fio job, one list of runs per job."""

    target: str
    mib_per_second: dict[str, list[float]]

    def median(self, job: str) -> float:
        return statistics.median(self.mib_per_second[job])


def fio(directory: Path, rw: str, block: str, size: str, seconds: int) -> float:
    """MiB/s of one fio job on a file in `directory`."""
    result = subprocess.run(
        [
            "fio", "--name=bench", f"--directory={directory}", f"--rw={rw}", f"--bs={block}",
            f"--size={size}", "--direct=1", "--ioengine=libaio", "--iodepth=16",
            f"--runtime={seconds}", "--time_based", "--output-format=json",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = json.loads(result.stdout)["jobs"][0]
    side = "read" if "read" in rw else "write"
    return float(job[side]["bw_bytes"]) / (1024 * 1024)


def _measure(target: str, directory: Path, size: str, seconds: int, runs: int) -> Rates:
    rates: dict[str, list[float]] = {job: [] for job in JOBS}
    # Lay the file out once, so reads read data and writes overwrite.
    fio(directory, "write", "1m", size, 1)
    for _ in range(runs):
        for job, (rw, block) in JOBS.items():
            rates[job].append(fio(directory, rw, block, size, seconds))
    return Rates(target, rates)


@contextmanager
def _mounted_volume(base: Path, name: str, *args: str) -> Iterator[Path]:
    with fakestor_server(base / f"data-{name}", *args) as server:
        ec2 = server.client()
        host = server.instance_id()
        volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
        poll(
            lambda: (
                ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available"
            )
        )
        ec2.attach_volume(VolumeId=volume_id, InstanceId=host, Device="/dev/sdf")
        link = by_id_path(volume_id)
        point = base / f"mnt-{name}"
        point.mkdir()
        try:
            poll(lambda: link.exists())
            subprocess.run(["mkfs.ext4", "-q", str(link)], check=True)
            subprocess.run(["mount", str(link), str(point)], check=True)
            yield point
        finally:
            if os.path.ismount(point):
                subprocess.run(["umount", str(point)], check=True)
            ec2.detach_volume(VolumeId=volume_id, Force=True)
            poll(
                lambda: not ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
            )
            ec2.delete_volume(VolumeId=volume_id)


def measure(work_dir: Path, quick: bool, runs: int) -> list[Rates]:
    if shutil.which("fio") is None:
        raise RuntimeError("fio is not installed (apt-get install fio)")
    size, seconds = ("64m", 1) if quick else ("1g", 5)
    with scratch(work_dir, "fakestor-fio-") as base:
        plain = base / "plain"
        plain.mkdir()
        results = [_measure("plain file", plain, size, seconds, runs)]
        for target, name, args in TARGETS:
            with _mounted_volume(base, name, *args) as point:
                results.append(_measure(target, point, size, seconds, runs))
    return results


def summary(results: list[Rates]) -> str:
    baseline = results[0]
    header = "| fio job | " + " | ".join(r.target for r in results) + " |"
    lines = [header, "|---" * (len(results) + 1) + "|"]
    for job in JOBS:
        cells = []
        for rates in results:
            runs = rates.mib_per_second[job]
            cell = f"{rates.median(job):.0f} MiB/s ({min(runs):.0f}-{max(runs):.0f})"
            if rates is not baseline:
                cell += f", {rates.median(job) / baseline.median(job):.2f}x"
            cells.append(cell)
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    by_target = {rates.target: rates for rates in results}
    fuse, loopdev = by_target.get("fuse volume (ext4)"), by_target.get("loopdev volume (ext4)")
    if fuse is not None and loopdev is not None:
        ratios = ", ".join(f"{job} {fuse.median(job) / loopdev.median(job):.2f}x" for job in JOBS)
        lines += ["", f"fuse volume / loopdev volume, medians of this run: {ratios}."]
    layer = by_target.get(LAYER)
    if layer is not None and loopdev is not None:
        ratios = ", ".join(f"{job} {layer.median(job) / loopdev.median(job):.2f}x" for job in JOBS)
        lines += ["", f"loopdev via the policy layer / loopdev direct: {ratios}."]
    return "\n".join(lines)


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("fio") is not None
