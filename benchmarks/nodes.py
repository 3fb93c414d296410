"""The nodes' data path: fio on one loopdev volume's device, attached to a node over NBD
(a `fakestor node` on this machine: nbdfuse, a loop device, nbdkit on the server) and then
to the host instance (a loop device on the image), with and without --node-tls.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import fakestor_server, poll, scratch, stop
from fakestor.device_names import by_id_path

# name: (fio rw, block size, queue depth); results in MiB/s, IOPS and mean latency.
JOBS = {
    "seq write 1 MiB, qd 4": ("write", "1m", 4),
    "seq read 1 MiB, qd 4": ("read", "1m", 4),
    "rand write 4 KiB, qd 16": ("randwrite", "4k", 16),
    "rand read 4 KiB, qd 16": ("randread", "4k", 16),
    "rand read 4 KiB, qd 1": ("randread", "4k", 1),
}


@dataclass
class Figures:
    target: str
    runs: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)

    def median(self, job: str, index: int) -> float:
        return statistics.median(run[index] for run in self.runs[job])


def fio(device: str, rw: str, block: str, depth: int, size: str, seconds: int) -> tuple[
    float, float, float
]:  # fmt: skip
    """(MiB/s, IOPS, mean completion latency in µs) of one fio job on `device`."""
    result = subprocess.run(
        [
            "fio", "--name=bench", f"--filename={device}", f"--rw={rw}", f"--bs={block}",
            f"--iodepth={depth}", f"--size={size}", "--direct=1", "--ioengine=libaio",
            f"--runtime={seconds}", "--time_based", "--output-format=json",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    job = json.loads(result.stdout)["jobs"][0]
    side = job["read" if "read" in rw else "write"]
    return side["bw_bytes"] / 1024**2, side["iops"], side["clat_ns"]["mean"] / 1000


@contextmanager
def _node(base: Path, endpoint: str) -> Iterator[tuple[str, Path]]:
    """A `fakestor node` for a new instance; (its instance id, its dev root)."""
    log = base / "node.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "fakestor", "node", "--endpoint", endpoint,
         "--data-dir", str(base / "node"), "--dev-root", str(base / "dev")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        found: list[str] = []

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"fakestor node exited: {log.read_text()}")
            found.extend(re.findall(r"ready: instance (i-[0-9a-f]+)", log.read_text()))
            return bool(found)

        poll(ready, timeout=60, interval=0.05)
        yield found[0], base / "dev"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop(process)


def _attachment_state(ec2: Any, volume_id: str) -> str:
    found = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    return str(found[0]["State"]) if found else "detached"


def _wait_available(ec2: Any, volume_id: str) -> None:
    def available() -> bool:
        volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        return bool(volume["State"] == "available")

    poll(available, interval=0.05)


def _measure_on(
    ec2: Any, volume_id: str, instance_id: str, link: Path, target: str, size: str,
    seconds: int, runs: int,
) -> Figures:  # fmt: skip
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    poll(lambda: _attachment_state(ec2, volume_id) == "attached", interval=0.05)
    figures = Figures(target, {job: [] for job in JOBS})
    try:
        device = os.path.realpath(link)
        fio(device, "write", "1m", 4, size, 1)  # lay the data out: reads read data
        for _ in range(runs):
            for job, (rw, block, depth) in JOBS.items():
                figures.runs[job].append(fio(device, rw, block, depth, size, seconds))
    finally:
        ec2.detach_volume(VolumeId=volume_id)
        poll(lambda: _attachment_state(ec2, volume_id) == "detached", interval=0.05)
    return figures


def measure(work_dir: Path, quick: bool, runs: int) -> list[Figures]:
    if shutil.which("fio") is None or shutil.which("nbdfuse") is None:
        raise RuntimeError("needs fio, nbdkit and libnbd-bin (apt-get install)")
    size, seconds = ("64m", 1) if quick else ("1g", 8)
    results: list[Figures] = []
    for tls in (False, True):
        with scratch(work_dir, "fakestor-nodes-") as base:
            args = ["--backend", "loopdev", *(["--node-tls"] if tls else [])]
            with fakestor_server(base / "data", *args) as server:
                ec2 = server.client()
                volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=2)["VolumeId"]
                _wait_available(ec2, volume_id)
                with _node(base, server.url) as (node_id, dev_root):
                    link = by_id_path(volume_id, dev_root / "disk" / "by-id")
                    name = "node over NBD" + (", TLS-PSK" if tls else "")
                    results.append(
                        _measure_on(ec2, volume_id, node_id, link, name, size, seconds, runs)
                    )
                if not tls:
                    host = server.instance_id()
                    results.insert(
                        0,
                        _measure_on(ec2, volume_id, host, by_id_path(volume_id),
                                    "host instance (loop device)", size, seconds, runs),
                    )  # fmt: skip
    return results


def summary(results: list[Figures]) -> str:
    baseline = results[0]
    lines = ["| fio job | " + " | ".join(r.target for r in results) + " |"]
    lines.append("|---" * (len(results) + 1) + "|")
    for job in JOBS:
        cells = []
        for figures in results:
            mib, iops, latency = (figures.median(job, i) for i in range(3))
            low = min(run[1] for run in figures.runs[job])
            high = max(run[1] for run in figures.runs[job])
            cell = f"{mib:,.1f} MiB/s, {iops:,.0f} IOPS ({low:,.0f}-{high:,.0f}), {latency:,.0f} µs"
            if figures is not baseline:
                cell += f", {iops / baseline.median(job, 1):.2f}x"
            cells.append(cell)
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
