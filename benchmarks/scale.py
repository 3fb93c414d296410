"""Many volumes attached at once (loopdev), against the same steps scripted by hand.

fakestor: CreateVolume, AttachVolume, DetachVolume and DeleteVolume for every
volume, each phase timed until DescribeVolumes says all are done. By hand: a
sparse image per volume, `losetup --find --show --direct-io=on` for each until
the device opens, `losetup --detach`, and unlinking the images. Loop devices
are created as needed in both; leaks are counted after each run.

The floor is what the API costs before any work: as many DescribeVolumes of one
volume as there are volumes, one after another on the same server and client. A
phase cannot take less than its round trips, whatever the server does.

The host instance takes only as many volumes as its type's EBS attachment limit
(27 for fakestor's m5.large), so volumes are attached and detached in waves of
that many, on both sides; a phase's time is the sum over its waves.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from backends import loop
from benchmarks.common import fakestor_server, opens, poll, scratch, timed
from fakestor.device_names import BY_ID_DIR, BY_ID_PREFIX

PHASES = ("create", "attach, all usable", "detach", "delete")
FLOOR = "floor: one DescribeVolumes round trip per volume"
DEVICE_NAMES = [
    f"/dev/xvd{first}{second}"
    for first in "bcdefghijklmnop"
    for second in "abcdefghijklmnopqrstuvwxyz"
]


@dataclass
class ScaleFigures:
    """Seconds per run for each (target, phase), and what each run left behind."""

    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    bound_at_once: list[int] = field(default_factory=list)
    wave_size: int = 0  # volumes attached at once: the host's attachment limit
    leaked_devices: int = 0
    leaked_links: int = 0
    leaked_images: int = 0

    def add(self, target: str, phase: str, seconds: float) -> None:
        self.times.setdefault((target, phase), []).append(seconds)

    def problems(self, count: int) -> list[str]:
        """What went wrong in the runs: too few devices at once, or anything left behind."""
        found = [
            f"{number} {what} left behind"
            for what, number in (
                ("loop devices", self.leaked_devices),
                ("by-id links", self.leaked_links),
                ("volume images", self.leaked_images),
            )
            if number
        ]
        wanted = min(count, self.wave_size or count)
        if max(self.bound_at_once, default=0) != wanted:
            found.append(f"only {max(self.bound_at_once, default=0)} of {wanted} bound at once")
        return found


def measure(work_dir: Path, count: int, runs: int) -> ScaleFigures:
    if count > len(DEVICE_NAMES):
        raise ValueError(f"at most {len(DEVICE_NAMES)} volumes fit the device names")
    figures = ScaleFigures()
    loops_before = {entry.name for entry in Path("/sys/block").glob("loop*")}
    try:
        for _ in range(runs):
            with scratch(work_dir, "fakestor-scale-") as base:
                _fakestor(base, count, figures)
                _by_hand(base, count, figures)
    finally:
        # The loop devices the kernel made for the runs go again once free.
        for entry in Path("/sys/block").glob("loop*"):
            if entry.name not in loops_before:
                loop.remove(int(entry.name.removeprefix("loop")))
    return figures


def _fakestor(base: Path, count: int, figures: ScaleFigures) -> None:
    # A check of create or delete describes every volume; polling every 50 ms rather than
    # 2 ms keeps the checks from crowding out the work they wait for, at the cost of 50 ms
    # at most. A wave of attaches or detaches is a few dozen volumes: checked every 5 ms,
    # or the polling alone would add up to 50 ms per wave.
    target = "fakestor"
    with fakestor_server(base / "data", "--backend", "loopdev") as server:
        ec2 = server.client()
        host = server.instance_id()
        ids: list[str] = []

        def create() -> None:
            for _ in range(count):
                ids.append(ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"])
            poll(lambda: all(v["State"] == "available" for v in _described(ec2, ids)), 600, 0.05)

        def attach(wave: list[str]) -> None:
            for volume_id, device in zip(wave, DEVICE_NAMES, strict=False):
                ec2.attach_volume(VolumeId=volume_id, InstanceId=host, Device=device)
            poll(lambda: all(
                v["Attachments"] and v["Attachments"][0]["State"] == "attached"
                for v in _described(ec2, wave)), 600, 0.005)  # fmt: skip

        def detach(wave: list[str]) -> None:
            for volume_id in wave:
                ec2.detach_volume(VolumeId=volume_id)
            poll(lambda: all(not v["Attachments"] for v in _described(ec2, wave)), 600, 0.005)

        def delete() -> None:
            for volume_id in ids:
                ec2.delete_volume(VolumeId=volume_id)
            poll(lambda: not ec2.describe_volumes()["Volumes"], 600, 0.05)

        figures.add(target, "create", timed(create))
        figures.add(target, FLOOR, timed(partial(_round_trips, ec2, ids[0], count)))
        wave_size = _attachment_limit(ec2, host)
        attaching = detaching = 0.0
        for start in range(0, count, wave_size):
            wave = ids[start : start + wave_size]
            attaching += timed(partial(attach, wave))
            figures.bound_at_once.append(len(loop.bound_under(base)))
            detaching += timed(partial(detach, wave))
        figures.add(target, "attach, all usable", attaching)
        figures.add(target, "detach", detaching)
        figures.add(target, "delete", timed(delete))
        figures.wave_size = wave_size
    time.sleep(0.5)
    figures.leaked_devices += len(loop.bound_under(base))
    figures.leaked_images += sum(1 for _ in (base / "data" / "volumes").glob("*"))
    if BY_ID_DIR.is_dir():
        dangling = [link for link in BY_ID_DIR.glob(f"{BY_ID_PREFIX}*") if not link.exists()]
        figures.leaked_links += len(dangling)


def _round_trips(ec2: Any, volume_id: str, count: int) -> None:
    """`count` sequential requests that change nothing: the API's own cost per request."""
    for _ in range(count):
        ec2.describe_volumes(VolumeIds=[volume_id])


def _attachment_limit(ec2: Any, instance_id: str) -> int:
    """How many EBS volumes the instance's type takes, as DescribeInstanceTypes says."""
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instance_type = reservations[0]["Instances"][0]["InstanceType"]
    described = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    return int(described[0]["EbsInfo"]["MaximumEbsAttachments"])


def _by_hand(base: Path, count: int, figures: ScaleFigures) -> None:
    target = "by hand"
    images = [base / f"by-hand-{index}.img" for index in range(count)]
    devices: list[str] = []
    wave_size = figures.wave_size or count

    def create() -> None:
        for image in images:
            with image.open("wb") as new_image:
                new_image.truncate(1024**3)

    def attach(wave: list[Path]) -> None:
        for image in wave:
            devices.append(subprocess.run(
                ["losetup", "--find", "--show", "--direct-io=on", str(image)],
                check=True, capture_output=True, text=True,
            ).stdout.strip())  # fmt: skip
        for device in devices:
            poll(partial(opens, device))

    def detach() -> None:
        while devices:
            subprocess.run(["losetup", "--detach", devices.pop()], check=True)

    def delete() -> None:
        for image in images:
            image.unlink()

    try:
        figures.add(target, "create", timed(create))
        attaching = detaching = 0.0
        for start in range(0, count, wave_size):
            attaching += timed(partial(attach, images[start : start + wave_size]))
            detaching += timed(detach)
        figures.add(target, "attach, all usable", attaching)
        figures.add(target, "detach", detaching)
        figures.add(target, "delete", timed(delete))
    finally:
        for device in devices:
            subprocess.run(["losetup", "--detach", device], check=False)


def _described(ec2: Any, ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 200):
        found += ec2.describe_volumes(VolumeIds=ids[start : start + 200])["Volumes"]
    return found


def summary(figures: ScaleFigures, count: int) -> str:
    def seconds(value: float) -> str:
        if value < 0.01:
            return f"{value * 1000:.1f} ms"
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"

    def cell(values: list[float]) -> str:
        low, high = seconds(min(values)), seconds(max(values))
        return f"{seconds(statistics.median(values))} ({low}-{high})"

    lines = [
        f"| {count} volumes | fakestor (loopdev) median (min-max) "
        "| by hand: truncate + losetup median (min-max) | ratio |",
        "|---|---|---|---|",
    ]
    for phase in PHASES:
        ours, theirs = figures.times[("fakestor", phase)], figures.times[("by hand", phase)]
        ratio = statistics.median(ours) / statistics.median(theirs)
        lines.append(f"| {phase} | {cell(ours)} | {cell(theirs)} | {ratio:.1f}x |")
    floor = figures.times[("fakestor", FLOOR)]
    lines.append(f"| {FLOOR} | {cell(floor)} | - | - |")
    above = []
    for phase in PHASES[:3]:
        by_hand = statistics.median(figures.times[("by hand", phase)])
        left = statistics.median(figures.times[("fakestor", phase)]) - statistics.median(floor)
        above.append(f"{phase} {seconds(left)} ({left / by_hand:.1f}x by hand)")
    lines += [
        "",
        "fakestor's time above the floor (phase median minus floor median): "
        + ", ".join(above)
        + ".",
        "",
        f"Loop devices bound to fakestor's images at once: {max(figures.bound_at_once)} "
        f"(waves of the host's attachment limit, {figures.wave_size}). Left behind after the "
        f"runs: {figures.leaked_devices} loop devices, {figures.leaked_links} `/dev/disk/by-id` "
        f"links, {figures.leaked_images} volume images.",
    ]
    return "\n".join(lines)
