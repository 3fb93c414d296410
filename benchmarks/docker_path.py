"""The Docker path: fakestor's plugins vs Docker's `local` driver on a hand-made loop device,
and fio inside a container on a fakestor volume vs on the data dir's filesystem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import fakestor_server, poll, scratch, stop
from benchmarks.datapath import JOBS
from benchmarks.dockerd import IMAGE, Dockerd, running_dockerd

ROOT = Path(__file__).resolve().parent.parent
MANAGED = "fakestor/ebs:latest"
FIO_IMAGE = "fakestor-bench/fio:1"


@dataclass
class DockerFigures:
    """Seconds per run for each (target, measurement)."""

    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    fio: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # MiB/s

    def add(self, target: str, what: str, seconds: float) -> None:
        self.times.setdefault((target, what), []).append(seconds)


@contextmanager
def legacy_plugin(url: str, root: Path) -> Iterator[str]:
    """`fakestor plugin` on a socket of its own; yields the driver name."""
    name = f"fakestor-bench-{os.getpid()}"
    socket_path = Path("/run/docker/plugins") / f"{name}.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "fakestor", "plugin", "--socket", str(socket_path),
         "--endpoint", url, "--mount-root", str(root / "mounts"),
         "--state-dir", str(root / "state")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll(lambda: socket_path.exists(), 30)
        yield name
    finally:
        stop(process, timeout=30)


def _cycle(docker: Dockerd, driver: str, options: list[str]) -> Callable[[], None]:
    """create + first run (attach, mkfs, mount) + rm, for one fresh volume."""

    def cycle() -> None:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        docker.run("volume", "create", "-d", driver, *options, name)
        docker.run("run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE,
                   "sh", "-c", "echo x > /data/f")  # fmt: skip
        docker.run("volume", "rm", name)

    return cycle


def _later_runs(docker: Dockerd, name: str, runs: int, figures: DockerFigures,
                target: str) -> None:  # fmt: skip
    """Fill volume `name` once, then time `runs` more `docker run`s that read it."""
    docker.run("run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE,
               "sh", "-c", "echo x > /data/f")  # fmt: skip
    for _ in range(runs):
        start = time.perf_counter()
        docker.run("run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE,
                   "cat", "/data/f")  # fmt: skip
        figures.add(target, "second run on an existing volume", time.perf_counter() - start)


def _second_run(docker: Dockerd, driver: str, options: list[str], runs: int,
                figures: DockerFigures, target: str) -> None:  # fmt: skip
    name = f"bench-{uuid.uuid4().hex[:8]}"
    docker.run("volume", "create", "-d", driver, *options, name)
    _later_runs(docker, name, runs, figures, target)
    docker.run("volume", "rm", name)


@contextmanager
def _local_volume(docker: Dockerd, work: Path) -> Iterator[str]:
    """What a user scripts by hand: image file, loop device, mkfs, a `local` driver volume.

    Yields the volume's name; the caller removes the volume, the loop device goes after.
    """
    image = work / f"local-{uuid.uuid4().hex[:8]}.img"
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with image.open("wb") as new_image:
        new_image.truncate(1024**3)
    device = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)],
                            check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    try:
        subprocess.run(["mkfs.ext4", "-q", device], check=True)
        docker.run("volume", "create", "-d", "local", "-o", "type=ext4", "-o",
                   f"device={device}", name)  # fmt: skip
        yield name
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        image.unlink(missing_ok=True)


def _local_cycle(docker: Dockerd, work: Path) -> float:
    """Seconds for the hand-made volume's setup, a first run writing a file, and its removal."""
    start = time.perf_counter()
    with _local_volume(docker, work) as name:
        docker.run("run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE,
                   "sh", "-c", "echo x > /data/f")  # fmt: skip
        docker.run("volume", "rm", name)
    return time.perf_counter() - start  # the loop device's release and the image's unlink too


def _local_second_run(docker: Dockerd, work: Path, runs: int, figures: DockerFigures) -> None:
    with _local_volume(docker, work) as name:
        _later_runs(docker, name, runs, figures, "local driver")
        docker.run("volume", "rm", name)


def _fio_image(docker: Dockerd, quick: bool) -> None:
    """An image with fio, from Debian's packages with mmdebstrap (cached in .build/); for the
    smoke run (--quick), the host's fio and the libraries it loads, made in seconds (a fresh
    clone has no cache, and mmdebstrap takes about a minute)."""
    if quick:
        _host_fio_image(docker)
        return
    cache = ROOT / ".build" / "fio-image.tar"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name("fio-image.partial.tar")  # mmdebstrap: .tar means a tarball
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--include=fio,libaio1",
             "--dpkgopt=path-exclude=/usr/share/doc/*", "bookworm", str(partial),
             "http://deb.debian.org/debian"],
            check=True, capture_output=True,
        )  # fmt: skip
        partial.rename(cache)
    docker.run("import", str(cache), FIO_IMAGE, timeout=600)


def _host_fio_image(docker: Dockerd) -> None:
    fio = shutil.which("fio")
    if fio is None:
        raise RuntimeError("needs fio on the host (apt-get install fio)")
    listing = subprocess.run(["ldd", fio], check=True, capture_output=True, text=True).stdout
    tarball = docker.root / "fio-image.tar"
    with tarfile.open(tarball, "w") as archive:
        for path in [fio, *re.findall(r"(/\S+) \(0x", listing)]:
            # The file itself, under the name the loader looks for (links resolved).
            archive.add(os.path.realpath(path), arcname=path.lstrip("/"))
    docker.run("import", str(tarball), FIO_IMAGE, timeout=600)
    tarball.unlink()


def _fio_runs(
    docker: Dockerd, source: str, size: str, seconds: int, runs: int
) -> dict[str, list[float]]:
    """MiB/s of each fio job, `runs` times, in a container with `source` (volume or host
    directory) at /data: the same fio binary and image for every target."""
    rates: dict[str, list[float]] = {job: [] for job in JOBS}
    layout = ["run", "--rm", "--network", "none", "-v", f"{source}:/data", FIO_IMAGE, "fio",
              "--name=bench", "--directory=/data", f"--size={size}", "--direct=1",
              "--ioengine=libaio", "--iodepth=16", "--output-format=json"]  # fmt: skip
    docker.run(*layout, "--rw=write", "--bs=1m", timeout=600)  # lay the file out once
    for _ in range(runs):
        for job, (rw, block) in JOBS.items():
            out = docker.run(*layout, f"--rw={rw}", f"--bs={block}", f"--runtime={seconds}",
                             "--time_based", timeout=600).stdout  # fmt: skip
            report = json.loads(out)["jobs"][0]
            side = "read" if "read" in rw else "write"
            rates[job].append(float(report[side]["bw_bytes"]) / (1024 * 1024))
    return rates


def _fio_on_volume(
    docker: Dockerd, driver: str, size: str, seconds: int, runs: int
) -> dict[str, list[float]]:
    name = f"bench-fio-{uuid.uuid4().hex[:8]}"
    docker.run("volume", "create", "-d", driver, "-o", "size=8", name)
    try:
        return _fio_runs(docker, name, size, seconds, runs)
    finally:
        docker.run("volume", "rm", name, check=False)


def measure(work_dir: Path, quick: bool, runs: int) -> DockerFigures:
    figures = DockerFigures()
    size, seconds = ("64m", 1) if quick else ("1g", 5)
    with scratch(work_dir, "fakestor-docker-") as work, running_dockerd() as docker:
        for _ in range(runs):
            figures.add("local driver", "create + first run + rm", _local_cycle(docker, work))
        _local_second_run(docker, work, runs, figures)
        _fio_image(docker, quick)
        raw = work / "raw"
        raw.mkdir()
        for job, rates in _fio_runs(docker, str(raw), size, seconds, runs).items():
            figures.fio[("data dir filesystem", job)] = rates
        for backend in ("loopdev", "fuse"):
            with (
                fakestor_server(work / f"data-{backend}", "--backend", backend) as server,
                legacy_plugin(server.url, work / f"plugin-{backend}") as driver,
            ):
                target = f"legacy plugin ({backend})"
                for _ in range(runs):
                    start = time.perf_counter()
                    _cycle(docker, driver, ["-o", "size=1"])()
                    figures.add(target, "create + first run + rm", time.perf_counter() - start)
                _second_run(docker, driver, ["-o", "size=1"], runs, figures, target)
                on_volume = _fio_on_volume(docker, driver, size, seconds, runs)
                for job, rates in on_volume.items():
                    figures.fio[(f"in a container, {backend}", job)] = rates
                if backend == "loopdev":
                    _managed(docker, server.url, runs, figures)
    return figures


def _managed(docker: Dockerd, url: str, runs: int, figures: DockerFigures) -> None:
    build = subprocess.run(
        [str(ROOT / "devenv" / "plugin" / "build"), MANAGED],
        env={**os.environ, "DOCKER_HOST": docker.host}, capture_output=True, text=True,
    )  # fmt: skip
    if build.returncode != 0:
        raise RuntimeError(f"building the managed plugin failed: {build.stderr}")
    docker.run("plugin", "set", MANAGED, f"FAKESTOR_ENDPOINT={url}")
    docker.run("plugin", "enable", "--timeout", "300", MANAGED)
    try:
        for _ in range(runs):
            start = time.perf_counter()
            _cycle(docker, MANAGED, ["-o", "size=1"])()
            figures.add("managed plugin", "create + first run + rm", time.perf_counter() - start)
        _second_run(docker, MANAGED, ["-o", "size=1"], runs, figures, "managed plugin")
    finally:
        docker.run("plugin", "disable", "--force", MANAGED, check=False)


def summary(figures: DockerFigures) -> str:
    targets = ["legacy plugin (loopdev)", "legacy plugin (fuse)", "managed plugin", "local driver"]
    lines = ["| wall time | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for what in ("create + first run + rm", "second run on an existing volume"):
        base = statistics.median(figures.times[("local driver", what)])
        cells = []
        for target in targets:
            values = figures.times.get((target, what))
            if not values:
                cells.append("-")
                continue
            median = statistics.median(values)
            cell = f"{median * 1000:.0f} ms ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
            if target != "local driver":
                cell += f", {median / base:.2f}x"
            cells.append(cell)
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    places = ["data dir filesystem", "in a container, loopdev", "in a container, fuse"]
    lines += ["", "| fio (MiB/s) | " + " | ".join(places) + " |", "|---" * (len(places) + 1) + "|"]
    for job in JOBS:
        base = statistics.median(figures.fio[("data dir filesystem", job)])
        cells = []
        for place in places:
            values = figures.fio[(place, job)]
            value = statistics.median(values)
            cell = f"{value:.0f} ({min(values):.0f}-{max(values):.0f})"
            cells.append(cell + ("" if place == places[0] else f", {value / base:.2f}x"))
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
