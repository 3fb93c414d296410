"""A dockerd of our own (tests and benchmarks), and a busybox image made without a registry.

It runs with its own data-root, exec-root and socket in a short temporary
directory, with --iptables=false --bridge=none, and is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fakestor.mounts import mount_table

DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
IMAGE = "fakestor-test/busybox:1"
BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "ls", "sleep", "dd", "sha256sum", "stat", "head", "mkdir", "touch",
    "id", "true", "wc", "sync", "df", "mount", "grep",
)  # fmt: skip


@dataclass
class Dockerd:
    root: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "dockerd.log"

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"),
                "--host", self.host,
                "--iptables=false", "--ip-masq=false", "--bridge=none",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.run("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKER, "--host", self.host, *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def import_busybox(self) -> None:
        rootfs = self.root / "busybox.tar"
        with tarfile.open(rootfs, "w") as archive:
            archive.add("/bin/busybox", arcname="bin/busybox")
            for applet in BUSYBOX_APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                archive.addfile(link)
        self.run("import", str(rootfs), IMAGE)


@contextmanager
def running_dockerd() -> Iterator[Dockerd]:
    """A dockerd in a short temporary directory (its sockets' paths must fit 108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="fsd-", dir="/tmp"))
    daemon = Dockerd(root)
    try:
        daemon.start()
        daemon.import_busybox()
        yield daemon
    finally:
        containers = daemon.run("ps", "-aq", check=False).stdout.split()
        if containers:
            daemon.run("rm", "-f", *containers, check=False)
        daemon.stop()
        # Whatever dockerd left mounted under its roots (it should leave nothing).
        for mount in reversed(mount_table()):
            if mount.target.startswith(str(root)):
                subprocess.run(["umount", "-l", mount.target], check=False)
        shutil.rmtree(root, ignore_errors=True)
