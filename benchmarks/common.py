"""Helpers shared by the benchmarks: timing, a server to measure, BENCHMARKS.md sections."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from backends import loop
from fakestor.device_names import BY_ID_DIR, BY_ID_PREFIX
from fakestor.mounts import mount_points

RESULTS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


@dataclass
class Figure:
    """One measured quantity for fakestor and for the alternative (seconds per run)."""

    what: str
    fakestor: list[float]
    alternative: list[float]
    alternative_name: str

    def row(self) -> str:
        ours, theirs = statistics.median(self.fakestor), statistics.median(self.alternative)
        ratio = ours / theirs if theirs else float("inf")
        return (
            f"| {self.what} | {_ms(ours)} ({_ms(min(self.fakestor))}-{_ms(max(self.fakestor))}) "
            f"| {self.alternative_name}: {_ms(theirs)} "
            f"({_ms(min(self.alternative))}-{_ms(max(self.alternative))}) | {ratio:.2f}x |"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def poll(check: Callable[[], bool], timeout: float = 120.0, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {check}")
        time.sleep(interval)


def opens(path: str) -> bool:
    """Whether `path` (a device, say) can be opened for reading now."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError:
        return False
    return True


def drop_caches() -> None:
    """Write back and drop the page cache, so each side of a copy starts cold."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def release_devices(base: Path) -> None:
    """Undo what an interrupted run left bound to files under `base`.

    Mounts of those loop devices go (lazily), then the by-id and /dev/fakestor
    links that point at them, then the devices themselves. A clean run leaves
    nothing for this to do.
    """
    bound = loop.bound_under(base)
    if not bound:
        return
    devices = {device.path for device in bound}
    for path in devices:
        with contextlib.suppress(OSError):  # the device went meanwhile: nothing mounted
            for point in reversed(mount_points(path)):
                subprocess.run(["umount", "-l", point], check=False)
    for folder, pattern in ((BY_ID_DIR, f"{BY_ID_PREFIX}*"), (Path("/dev/fakestor"), "*")):
        for link in folder.glob(pattern):
            if link.is_symlink() and os.path.realpath(link) in devices:
                link.unlink(missing_ok=True)
    for path in devices:
        loop.detach(path, force=True)


@contextmanager
def scratch(work_dir: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory for a section's images; on the way out, whatever a failed
    run left bound to them is released before the directory goes."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    try:
        yield base
    finally:
        release_devices(base)
        shutil.rmtree(base, ignore_errors=True)


def machine_description(work_dir: Path | None = None) -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(re.findall(r"^processor", Path("/proc/cpuinfo").read_text(), re.M))
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    where = ""
    if work_dir is not None:
        found = subprocess.run(
            ["findmnt", "--noheadings", "--output", "FSTYPE,SOURCE", "--target", str(work_dir)],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        if len(found) == 2:
            where = f", images on {found[0]} ({found[1]})"
    return (
        f"{cores} cores ({cpu}), {memory_kib // 1024 // 1024} GiB memory, "
        f"Linux {platform.release()}, Python {platform.python_version()}{where}"
    )


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    url: str

    def client(self) -> Any:
        return boto3.client(
            "ec2",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 1}),
        )

    def instance_id(self) -> str:
        """The id of the instance the server runs on, from its instance metadata."""
        with urllib.request.urlopen(f"{self.url}/latest/meta-data/instance-id") as reply:
            return str(reply.read().decode())


@contextmanager
def fakestor_server(data_dir: Path, *args: str) -> Iterator[RunningServer]:
    """A fakestor server for the duration of the block; stopped by its PID afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakestor", "server", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://[\d.]+:\d+", line)
        if not match:
            raise RuntimeError(f"server did not start: {line}{process.stdout.read()}")
        # Keep reading what it prints, so a full pipe never stalls the server being timed.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield RunningServer(process, match.group(0))
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any], timeout: float = 60) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_section(
    name: str, body: str, work_dir: Path | None = None, results: Path = RESULTS
) -> None:
    """Replace (or add) the section `name` of BENCHMARKS.md, keeping the others."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = results.read_text() if results.exists() else "# Benchmarks\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description(work_dir)
    block = f"{begin}\n{body.rstrip()}\n\n_Measured {stamp} on {machine}._\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    results.write_text(text)
