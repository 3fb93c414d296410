"""The control plane: the same boto3 workload against fakestor and against moto_server.

Both answer on loopback; fakestor uses the metadata backend, so only the control
planes are compared (fakestor commits every change to SQLite with fsync; moto
keeps everything in memory).
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.common import fakestor_server, stop

ZONE = "us-east-1a"


@dataclass
class Counts:
    volumes: int = 1000
    snapshots: int = 250
    describes: int = 100
    big: int = 10_000  # volumes present for the latency figure
    latency_samples: int = 200
    # moto scans every volume's tags per filtered call (about 6 s each at 4,000 volumes
    # here), so each latency series stops after this many seconds once it has
    # `min_latency_samples`; the table reports how many calls each figure rests on.
    latency_budget_s: float = 120.0
    min_latency_samples: int = 5


QUICK = Counts(
    volumes=40, snapshots=10, describes=10, big=200, latency_samples=20, latency_budget_s=10.0
)


@dataclass
class Result:
    """Operations per second per phase, and DescribeVolumes latencies at `big` volumes."""

    target: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    pages: int = 0  # pages the paged listing came in


def _client(url: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        # moto's filtered DescribeVolumes at 10,000 volumes takes around a minute.
        config=Config(retries={"max_attempts": 1}, read_timeout=900),
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[str]:
    executable = Path(sys.executable).with_name("moto_server")
    if not executable.exists():
        found = shutil.which("moto_server")
        if found is None:
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
        executable = Path(found)
    port = _free_port()
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _client(url).describe_regions()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        stop(process, timeout=30)


def _rate(count: int, action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return count / (time.perf_counter() - start)


def _wait_available(ec2: Any, ids: list[str]) -> None:
    for start in range(0, len(ids), 200):
        batch = ids[start : start + 200]
        while any(
            v["State"] != "available" for v in ec2.describe_volumes(VolumeIds=batch)["Volumes"]
        ):
            time.sleep(0.05)


def workload(url: str, counts: Counts, result: Result) -> None:
    ec2 = _client(url)
    ids: list[str] = []

    def create() -> None:
        for index in range(counts.volumes):
            ids.append(ec2.create_volume(
                AvailabilityZone=ZONE, Size=1,
                TagSpecifications=[{"ResourceType": "volume",
                                    "Tags": [{"Key": "bench", "Value": str(index % 10)}]}],
            )["VolumeId"])  # fmt: skip

    phases: list[tuple[str, int, Callable[[], None]]] = [
        ("CreateVolume with tags", counts.volumes, create),
    ]
    for name, count, action in phases:
        result.rates.setdefault(name, []).append(_rate(count, action))
    _wait_available(ec2, ids)

    def by_ids() -> None:
        for index in range(counts.describes):
            chosen = ids[(index * 10) % len(ids) :][:10]
            ec2.describe_volumes(VolumeIds=chosen)

    def by_tag() -> None:
        for index in range(counts.describes):
            ec2.describe_volumes(Filters=[{"Name": "tag:bench", "Values": [str(index % 10)]}])

    def paged() -> None:
        pages = listed = 0
        for page in ec2.get_paginator("describe_volumes").paginate(
            PaginationConfig={"PageSize": 100}
        ):
            pages += 1
            listed += len(page["Volumes"])
        if listed != len(ids):
            raise RuntimeError(f"{result.target} listed {listed} of {len(ids)} volumes")
        result.pages = pages

    def snapshots() -> None:
        for index in range(counts.snapshots):
            snapshot_id = ec2.create_snapshot(VolumeId=ids[index % len(ids)])["SnapshotId"]
            # As a client must: EBS refuses to delete a snapshot still `pending`.
            while (
                ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
                != "completed"
            ):
                time.sleep(0.005)
            ec2.delete_snapshot(SnapshotId=snapshot_id)

    def delete() -> None:
        for volume_id in ids:
            ec2.delete_volume(VolumeId=volume_id)

    result.rates.setdefault("DescribeVolumes by 10 ids", []).append(_rate(counts.describes, by_ids))
    result.rates.setdefault("DescribeVolumes by tag filter", []).append(
        _rate(counts.describes, by_tag)
    )
    result.rates.setdefault(
        f"DescribeVolumes paged over all {counts.volumes:,}, MaxResults 100 (listings/s)", []
    ).append(_rate(1, paged))
    snapshot_sets = "CreateSnapshot, DescribeSnapshots until completed, DeleteSnapshot (sets/s)"
    result.rates.setdefault(snapshot_sets, []).append(_rate(counts.snapshots, snapshots))
    result.rates.setdefault("DeleteVolume", []).append(_rate(len(ids), delete))


def latency(url: str, counts: Counts, result: Result) -> None:
    ec2 = _client(url)
    ids = [
        ec2.create_volume(AvailabilityZone=ZONE, Size=1,
                          TagSpecifications=[{"ResourceType": "volume",
                                              "Tags": [{"Key": "n", "Value": str(i)}]}])["VolumeId"]
        for i in range(counts.big)
    ]  # fmt: skip
    _wait_available(ec2, ids)
    calls: list[tuple[str, Callable[[int], Any]]] = [
        ("by id", lambda i: ec2.describe_volumes(VolumeIds=[ids[i * 37 % len(ids)]])),
        (
            "by tag filter",
            lambda i: ec2.describe_volumes(
                Filters=[{"Name": "tag:n", "Values": [str(i * 37 % len(ids))]}]
            ),
        ),
    ]
    for name, call in calls:
        samples: list[float] = []
        budget_ends = time.perf_counter() + counts.latency_budget_s
        for index in range(counts.latency_samples):
            if len(samples) >= counts.min_latency_samples and time.perf_counter() > budget_ends:
                break
            start = time.perf_counter()
            call(index)
            samples.append(time.perf_counter() - start)
        result.latencies[name] = samples


def measure(counts: Counts, runs: int) -> list[Result]:
    ours, theirs = Result("fakestor"), Result("moto_server")
    for _ in range(runs):
        with (
            tempfile.TemporaryDirectory(prefix="fakestor-cp-") as scratch,
            fakestor_server(Path(scratch) / "data", "--backend", "metadata") as server,
        ):
            workload(server.url, counts, ours)
        with moto_server() as url:
            workload(url, counts, theirs)
    with (
        tempfile.TemporaryDirectory(prefix="fakestor-cp-") as scratch,
        fakestor_server(Path(scratch) / "data", "--backend", "metadata") as server,
    ):
        latency(server.url, counts, ours)
    with moto_server() as url:
        latency(url, counts, theirs)
    return [ours, theirs]


def _per_second(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _rate_text(values: list[float]) -> str:
    """Median (min-max), with three significant digits below 100 per second."""
    median = _per_second(statistics.median(values))
    return f"{median} ({_per_second(min(values))}-{_per_second(max(values))})"


def _ratio(value: float) -> str:
    """Two decimals, or three significant digits for ratios far below 1."""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3g}x"


def _percentile(samples: list[float], percent: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


def summary(results: list[Result], counts: Counts) -> str:
    ours, theirs = results
    lines = [
        "| operation (per second) | fakestor median (min-max) "
        "| moto_server median (min-max) | ratio |",
        "|---|---|---|---|",
    ]
    for name, values in ours.rates.items():
        other = theirs.rates[name]
        ratio = statistics.median(values) / statistics.median(other)
        lines.append(f"| {name} | {_rate_text(values)} | {_rate_text(other)} | {ratio:.2f}x |")
    lines += [
        "",
        f"The paged listing came in {ours.pages} pages from fakestor and {theirs.pages} from "
        "moto_server"
        + (
            " (moto ignores MaxResults on DescribeVolumes and answers everything at once)."
            if theirs.pages == 1 < ours.pages
            else "."
        ),
        "",
        f"DescribeVolumes latency with {counts.big:,} volumes: up to "
        f"{counts.latency_samples} calls per series, a series stopping after "
        f"{counts.latency_budget_s:.0f} s once it has {counts.min_latency_samples} calls "
        "(p99 of fewer than 100 calls is their maximum):",
        "",
        "| DescribeVolumes | fakestor p50 / p99 (calls) | moto_server p50 / p99 (calls) "
        "| p50 ratio |",
        "|---|---|---|---|",
    ]
    for name, samples in ours.latencies.items():
        other = theirs.latencies[name]
        ours_p50, ours_p99 = _percentile(samples, 50), _percentile(samples, 99)
        their_p50, their_p99 = _percentile(other, 50), _percentile(other, 99)
        lines.append(
            f"| {name} | {ours_p50 * 1000:.1f} / {ours_p99 * 1000:.1f} ms ({len(samples)}) "
            f"| {their_p50 * 1000:.1f} / {their_p99 * 1000:.1f} ms ({len(other)}) "
            f"| {_ratio(ours_p50 / their_p50)} |"
        )
    return "\n".join(lines)
