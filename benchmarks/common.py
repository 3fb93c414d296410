"""Helpers shared by the benchmarks: timing, a server to measure, BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

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


def machine_description() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(re.findall(r"^processor", Path("/proc/cpuinfo").read_text(), re.M))
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{cores} cores ({cpu}), {memory_kib // 1024 // 1024} GiB memory, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
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
        yield RunningServer(process, match.group(0))
    finally:
        process.terminate()
        process.wait(timeout=60)


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section `name` of BENCHMARKS.md, keeping the others."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{begin}\n{body.rstrip()}\n\n_Measured {stamp} on {machine_description()}._\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
