"""Attach and snapshot with the loopdev backend, against the same steps done by hand.

fakestor: AttachVolume until the by-id link opens; CreateSnapshot until `completed`.
By hand: `losetup --find --show --direct-io=on` until the device opens; `cp
--sparse=always` of the image followed by `sync` of the copy (fakestor's snapshot
is durable too). Same machine, same filesystem, same data layout.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.common import Figure, drop_caches, fakestor_server, opens, poll, scratch, timed
from fakestor.device_names import by_id_path

MIB = 1024 * 1024
GIB = 1024 * MIB
EXTENTS = 16


def write_data(path: str, size: int, data_bytes: int) -> None:
    """`data_bytes` of random data in EXTENTS runs spread over `size` bytes."""
    chunk = data_bytes // EXTENTS
    stride = size // EXTENTS
    fd = os.open(path, os.O_WRONLY)
    try:
        for index in range(EXTENTS):
            offset = index * stride
            for done in range(0, chunk, 16 * MIB):
                os.pwrite(fd, os.urandom(min(16 * MIB, chunk - done)), offset + done)
        os.fsync(fd)
    finally:
        os.close(fd)


def measure(work_dir: Path, size_gib: int, data_mib: int, runs: int) -> list[Figure]:
    with scratch(work_dir, "fakestor-bench-") as base:
        ours = _fakestor(base, size_gib, data_mib, runs)
        theirs = _by_hand(base, size_gib, data_mib, runs)
    label = f"{size_gib} GiB volume, {data_mib} MiB written"
    return [
        Figure(f"attach -> device usable ({label})", ours[0], theirs[0], "losetup"),
        Figure(f"snapshot ({label})", ours[1], theirs[1], "cp --sparse=always + sync"),
    ]


def _fakestor(base: Path, size_gib: int, data_mib: int, runs: int) -> tuple[list[float], ...]:
    attach_times: list[float] = []
    snapshot_times: list[float] = []
    with fakestor_server(base / "data", "--backend", "loopdev") as server:
        ec2 = server.client()
        host = server.instance_id()
        volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=size_gib)["VolumeId"]
        poll(lambda: _state(ec2, volume_id) == "available")
        link = str(by_id_path(volume_id))

        def attach() -> None:
            ec2.attach_volume(VolumeId=volume_id, InstanceId=host, Device="/dev/sdf")
            poll(lambda: opens(link))

        def detach() -> None:
            ec2.detach_volume(VolumeId=volume_id)
            poll(lambda: _state(ec2, volume_id) == "available")

        attach()
        write_data(link, size_gib * GIB, data_mib * MIB)
        detach()
        for _ in range(runs):
            attach_times.append(timed(attach))
            detach()
        for _ in range(runs):
            snapshot_id = ""

            def snapshot() -> None:
                nonlocal snapshot_id
                snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
                poll(lambda: _snapshot_state(ec2, snapshot_id) == "completed", interval=0.005)

            drop_caches()
            snapshot_times.append(timed(snapshot))
            ec2.delete_snapshot(SnapshotId=snapshot_id)
        ec2.delete_volume(VolumeId=volume_id)
        poll(
            lambda: (
                not ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])[
                    "Volumes"
                ]
            )
        )
    return attach_times, snapshot_times


def _state(ec2: Any, volume_id: str) -> str:
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    if volume["Attachments"]:
        return str(volume["Attachments"][0]["State"])
    return str(volume["State"])


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    found = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    return str(found[0]["State"])


def _by_hand(base: Path, size_gib: int, data_mib: int, runs: int) -> tuple[list[float], ...]:
    image = base / "manual.img"
    with image.open("wb") as new_image:
        new_image.truncate(size_gib * GIB)
    write_data(str(image), size_gib * GIB, data_mib * MIB)
    attach_times: list[float] = []
    snapshot_times: list[float] = []
    for _ in range(runs):
        device = ""

        def attach() -> None:
            nonlocal device
            device = subprocess.run(
                ["losetup", "--find", "--show", "--direct-io=on", str(image)],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            poll(lambda: opens(device))

        attach_times.append(timed(attach))
        subprocess.run(["losetup", "--detach", device], check=True)
    for index in range(runs):
        copy = base / f"manual-snap-{index}.img"

        def snapshot(copy: Path = copy) -> None:
            subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
            subprocess.run(["sync", str(copy)], check=True)

        drop_caches()
        snapshot_times.append(timed(snapshot))
        copy.unlink()
    return attach_times, snapshot_times


def summary(figures: list[Figure]) -> str:
    lines = [
        "| measurement | fakestor median (min-max) | by hand median (min-max) | ratio |",
        "|---|---|---|---|",
    ]
    lines += [figure.row() for figure in figures]
    slowest = max(statistics.median(f.fakestor) / statistics.median(f.alternative) for f in figures)
    lines.append("")
    lines.append(f"Worst ratio: {slowest:.2f}x the hand-made equivalent.")
    return "\n".join(lines)
