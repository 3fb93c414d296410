"""The EBS direct APIs on real data: a full snapshot read through GetSnapshotBlock with 8
threads, against 8 threads reading the same bytes from a local image file (and `dd`); and
ListChangedBlocks between two snapshots of a large volume, against moto's ListChangedBlocks
(moto keeps blocks in memory and compares them there).
"""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.common import drop_caches, fakestor_server, poll, scratch
from benchmarks.control_plane import moto_server
from fakestor.device_names import by_id_path

BLOCK = 512 * 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
THREADS = 8
BACKENDS = ("loopdev", "fuse")


@dataclass(frozen=True)
class Sizes:
    read_volume_gib: int = 8
    read_mib: int = 1024  # written into the snapshot read back
    diff_volume_gib: int = 100
    diff_base_blocks: int = 400  # written before the first snapshot (200 MiB)
    diff_changed_blocks: int = 200  # of those, rewritten before the second (100 MiB)


QUICK = Sizes(
    read_volume_gib=1, read_mib=32, diff_volume_gib=1, diff_base_blocks=32, diff_changed_blocks=8
)


@dataclass
class Figures:
    """Seconds per run, keyed by who did it."""

    read: dict[str, list[float]] = field(default_factory=dict)
    write: dict[str, list[float]] = field(default_factory=dict)
    diff: dict[str, list[float]] = field(default_factory=dict)  # page cache dropped before
    diff_warm: dict[str, list[float]] = field(default_factory=dict)
    diff_found: dict[str, int] = field(default_factory=dict)


def _client(service: str, url: str) -> Any:
    make: Any = boto3.client  # its stubs want the service name as a literal
    return make(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1}, max_pool_connections=THREADS * 2),
    )


def _checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _blocks(seed: int, count: int) -> list[bytes]:
    """`count` distinct incompressible blocks (a pool reused over the writes)."""
    pool = [os.urandom(BLOCK) for _ in range(min(count, 64))]
    return [pool[(seed + i) % len(pool)] for i in range(count)]


def _put_all(ebs: Any, snapshot_id: str, written: dict[int, bytes]) -> None:
    def put(item: tuple[int, bytes]) -> None:
        index, data = item
        ebs.put_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=BLOCK,
            Checksum=_checksum(data), ChecksumAlgorithm="SHA256",
        )  # fmt: skip

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(put, written.items()))


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    return str(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"])


def _written_snapshot(ebs: Any, ec2: Any, size_gib: int, written: dict[int, bytes]) -> str:
    snapshot_id = str(ebs.start_snapshot(VolumeSize=size_gib)["SnapshotId"])
    _put_all(ebs, snapshot_id, written)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(written))
    if ec2 is not None:
        poll(lambda: _snapshot_state(ec2, snapshot_id) == "completed", 600, 0.01)
    return snapshot_id


def _paged(call: Callable[..., dict[str, Any]], key: str, **params: Any) -> list[Any]:
    found: list[Any] = []
    token = None
    while True:
        page = call(**params, **({"NextToken": token} if token else {}))
        found += page[key]
        token = page.get("NextToken")
        if not token:
            return found


def _read_snapshot(ebs: Any, snapshot_id: str) -> int:
    """List and read every block with THREADS threads; returns the bytes read."""
    blocks = _paged(ebs.list_snapshot_blocks, "Blocks", SnapshotId=snapshot_id)

    def get(block: dict[str, Any]) -> int:
        answer = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"]
        )
        return len(answer["BlockData"].read())

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(get, blocks))


def _timed_read(read: Callable[[], int], expected: int) -> float:
    drop_caches()
    start = time.perf_counter()
    got = read()
    elapsed = time.perf_counter() - start
    if got != expected:
        raise RuntimeError(f"read {got} bytes, expected {expected}")
    return elapsed


def _read_figures(base: Path, sizes: Sizes, runs: int, figures: Figures) -> None:
    count = sizes.read_mib * MIB // BLOCK
    written = dict(enumerate(_blocks(0, count)))
    expected = count * BLOCK
    for backend in BACKENDS:
        with fakestor_server(base / f"read-{backend}", "--backend", backend) as server:
            ebs, ec2 = _client("ebs", server.url), server.client()
            for _ in range(runs):
                start = time.perf_counter()
                snapshot_id = _written_snapshot(ebs, ec2, sizes.read_volume_gib, written)
                figures.write.setdefault(backend, []).append(time.perf_counter() - start)
                figures.read.setdefault(backend, []).append(
                    _timed_read(partial(_read_snapshot, ebs, snapshot_id), expected)
                )
                ec2.delete_snapshot(SnapshotId=snapshot_id)
    image = base / "by-hand.img"
    for _ in range(runs):
        start = time.perf_counter()
        _write_image(image, sizes.read_volume_gib * GIB, written)
        figures.write.setdefault("file", []).append(time.perf_counter() - start)
        figures.read.setdefault("file", []).append(
            _timed_read(lambda: _read_image(image, list(written)), expected)
        )
        figures.read.setdefault("dd", []).append(_timed_read(lambda: _dd(image, count), expected))
        image.unlink()


def _write_image(image: Path, size: int, written: dict[int, bytes]) -> None:
    """The same blocks into a sparse image file, THREADS threads, then fsync."""
    fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda item: os.pwrite(fd, item[1], item[0] * BLOCK), written.items()))
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_image(image: Path, indexes: list[int]) -> int:
    fd = os.open(image, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return sum(pool.map(lambda index: len(os.pread(fd, BLOCK, index * BLOCK)), indexes))
    finally:
        os.close(fd)


def _dd(image: Path, count: int) -> int:
    subprocess.run(
        ["dd", f"if={image}", "of=/dev/null", "bs=512K", f"count={count}", "status=none"],
        check=True,
    )
    return count * BLOCK


# ---- ListChangedBlocks ---------------------------------------------------------------


def _diff_layout(sizes: Sizes) -> tuple[list[int], list[int]]:
    """Base blocks spread evenly over the volume, and every other one of them changed."""
    total = sizes.diff_volume_gib * GIB // BLOCK
    stride = total // sizes.diff_base_blocks
    base = [i * stride for i in range(sizes.diff_base_blocks)]
    step = sizes.diff_base_blocks // sizes.diff_changed_blocks
    return base, base[::step][: sizes.diff_changed_blocks]


def _write_blocks(device: str, blocks: dict[int, bytes]) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        for index, data in blocks.items():
            os.pwrite(fd, data, index * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)


def _volume_snapshots(server: Any, sizes: Sizes) -> tuple[str, str]:
    """Two snapshots of one volume, the second after the changed blocks were rewritten."""
    ec2 = server.client()
    base, changed = _diff_layout(sizes)
    volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=sizes.diff_volume_gib)[
        "VolumeId"
    ]
    poll(lambda: _volume_state(ec2, volume_id) == "available")
    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.instance_id(), Device="/dev/sdf")
    link = str(by_id_path(volume_id))
    poll(lambda: Path(link).exists())
    _write_blocks(link, dict(zip(base, _blocks(0, len(base)), strict=True)))
    first = _volume_snapshot(ec2, volume_id)
    _write_blocks(link, dict(zip(changed, _blocks(7, len(changed)), strict=True)))
    second = _volume_snapshot(ec2, volume_id)
    ec2.detach_volume(VolumeId=volume_id)
    poll(lambda: _volume_state(ec2, volume_id) == "available")
    return first, second


def _volume_state(ec2: Any, volume_id: str) -> str:
    return str(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"])


def _volume_snapshot(ec2: Any, volume_id: str) -> str:
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"])
    poll(lambda: _snapshot_state(ec2, snapshot_id) == "completed", 600, 0.01)
    return snapshot_id


def _list_changed(ebs: Any, first: str, second: str) -> int:
    changed = _paged(
        ebs.list_changed_blocks, "ChangedBlocks", FirstSnapshotId=first, SecondSnapshotId=second
    )
    return len(changed)


def _timed_listing(
    ebs: Any, first: str, second: str, runs: int, cold: bool
) -> Iterator[tuple[float, int]]:
    for _ in range(runs):
        if cold:
            drop_caches()
        start = time.perf_counter()
        found = _list_changed(ebs, first, second)
        yield time.perf_counter() - start, found


def _diff_figures(base: Path, sizes: Sizes, runs: int, figures: Figures) -> None:
    for backend in BACKENDS:
        with fakestor_server(base / f"diff-{backend}", "--backend", backend) as server:
            first, second = _volume_snapshots(server, sizes)
            ebs = _client("ebs", server.url)
            for elapsed, found in _timed_listing(ebs, first, second, runs, cold=True):
                figures.diff.setdefault(backend, []).append(elapsed)
                figures.diff_found[backend] = found
            for elapsed, _ in _timed_listing(ebs, first, second, runs, cold=False):
                figures.diff_warm.setdefault(backend, []).append(elapsed)
    base_blocks, changed = _diff_layout(sizes)
    with moto_server() as url:
        ebs = _client("ebs", url)
        old = dict(zip(base_blocks, _blocks(0, len(base_blocks)), strict=True))
        new = {**old, **dict(zip(changed, _blocks(7, len(changed)), strict=True))}
        first = _written_snapshot(ebs, None, sizes.diff_volume_gib, old)
        second = _written_snapshot(ebs, None, sizes.diff_volume_gib, new)
        for elapsed, found in _timed_listing(ebs, first, second, runs, cold=False):
            figures.diff.setdefault("moto", []).append(elapsed)
            figures.diff_found["moto"] = found


def measure(work_dir: Path, sizes: Sizes, runs: int) -> Figures:
    figures = Figures()
    with scratch(work_dir, "fakestor-direct-") as base:
        _read_figures(base, sizes, runs, figures)
        _diff_figures(base, sizes, runs, figures)
    return figures


# ---- the table -----------------------------------------------------------------------


def _rate(seconds: list[float], mib: float) -> str:
    rates = [mib / s for s in seconds]
    return f"{statistics.median(rates):.0f} MiB/s ({min(rates):.0f}-{max(rates):.0f})"


def _ms(seconds: list[float]) -> str:
    values = [1000 * s for s in seconds]
    return f"{statistics.median(values):.0f} ms ({min(values):.0f}-{max(values):.0f})"


def _ratio(ours: list[float], theirs: list[float]) -> str:
    """Above 1: fakestor takes less time."""
    return f"{statistics.median(theirs) / statistics.median(ours):.2f}x"


def summary(figures: Figures, sizes: Sizes) -> str:
    mib = sizes.read_mib
    lines = [
        f"| {mib} MiB written, {THREADS} threads | loopdev | fuse | alternative |",
        "|---|---|---|---|",
    ]
    for what, kind, name in (
        ("full read: ListSnapshotBlocks + GetSnapshotBlock", figures.read, "file"),
        ("write: StartSnapshot + PutSnapshotBlock + CompleteSnapshot", figures.write, "file"),
    ):
        theirs = kind[name]
        cells = [f"{_rate(kind[b], mib)}, {_ratio(kind[b], theirs)}" for b in BACKENDS]
        how = "preads" if kind is figures.read else "pwrites + fsync"
        lines.append(
            f"| {what} | {' | '.join(cells)} | image file, {THREADS} threads' {how}: "
            f"{_rate(theirs, mib)} |"
        )
    lines.append(
        f"| (single stream) | | | `dd bs=512K` of the image: {_rate(figures.read['dd'], mib)} |"
    )
    changed_mib = sizes.diff_changed_blocks * BLOCK // MIB
    lines += [
        "",
        f"| ListChangedBlocks, {sizes.diff_volume_gib} GiB volume, "
        f"{sizes.diff_base_blocks * BLOCK // MIB} MiB written, {changed_mib} MiB changed "
        "| loopdev | fuse | moto |",
        "|---|---|---|---|",
    ]
    moto = figures.diff["moto"]
    cells = [f"{_ms(figures.diff[b])}, {_ratio(figures.diff[b], moto)}" for b in BACKENDS]
    lines.append(f"| time per full listing, cold page cache | {' | '.join(cells)} | {_ms(moto)} |")
    cells = [f"{_ms(figures.diff_warm[b])}, {_ratio(figures.diff_warm[b], moto)}" for b in BACKENDS]
    lines.append(f"| time per full listing, repeated (warm) | {' | '.join(cells)} | {_ms(moto)} |")
    found = [str(figures.diff_found[who]) for who in (*BACKENDS, "moto")]
    lines.append(f"| changed blocks listed | {' | '.join(found)} |")
    return "\n".join(lines)
