"""Shared fixtures: live fakestor servers on loopback ports and boto3 clients for them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
ZONE = "us-east-1a"
OTHER_ZONE = "us-east-1b"
IN_CI = os.environ.get("CI") == "true"
# Tests with either marker touch the machine (root, loop devices, /dev/disk/by-id links,
# mounts, dockerd, network namespaces): devenv/test runs them one at a time, beside the
# API-only tests.
MACHINE_MARKERS = ("privileged", "docker")

_READY = re.compile(
    r"serving EC2 and instance metadata on http://([\d.]+):(\d+).*host instance (i-[0-9a-f]+)"
)


@dataclass
class Server:
    """A `fakestor server` process started by a test."""

    data_dir: Path
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    host_instance_id: str = ""
    port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 20.0) -> None:
        port = str(self.port) if self.port else "0"
        command = [
            sys.executable, "-m", "fakestor", "server",
            "--listen", f"127.0.0.1:{port}",
            "--data-dir", str(self.data_dir),
            *self.args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        offset = log.tell()
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.extra_env}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search(self.log_path.read_bytes()[offset:].decode())
            if match:
                self.port = int(match.group(2))
                self.url = f"http://127.0.0.1:{self.port}"
                self.host_instance_id = match.group(3)
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"fakestor server exited:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"fakestor server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=20)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=20)
        self.process = None

    def client(self, **config: Any) -> Any:
        return ec2_client(self.url, **config)

    def log(self) -> str:
        return self.log_path.read_text()


def ec2_client(url: str, **config: Any) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries={"max_attempts": 1}, **config),
    )


ServerFactory = Callable[..., Server]


_current: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[:] = [item]


def require_machine_marker(what: str) -> None:
    """Fail a test that needs the machine but is not marked so: unmarked, it could run beside
    another such test (parallel workers) and share loop devices, links or dockerd with it."""
    if _current and _current[0].get_closest_marker("privileged") is None:
        pytest.fail(
            f"{_current[0].nodeid} needs {what}: mark it @pytest.mark.privileged "
            "(or give its parameter that mark), so it runs with the other machine tests"
        )


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers on demand; every one is stopped (by its PID) after the test."""
    started: list[Server] = []

    def start(
        *args: str,
        backend: str = "metadata",
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Server:
        if backend != "metadata":
            require_machine_marker(f"the {backend} backend")
        root = tmp_path_factory.mktemp("fakestor")
        server = Server(
            data_dir=data_dir or root / "data",
            args=["--backend", backend, *args],
            log_path=root / "server.log",
            extra_env=dict(env or {}),
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process is not None:
            server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by the tests that only need an API (metadata backend, no latency)."""
    root = tmp_path_factory.mktemp("shared-server")
    shared = Server(data_dir=root / "data", args=["--backend", "metadata"], log_path=root / "log")
    shared.start()
    yield shared
    if shared.process is not None:
        assert shared.stop() == 0, shared.log()
    assert "Traceback" not in shared.log(), shared.log()


@pytest.fixture
def ec2(server: Server) -> Any:
    return server.client()


def wait_for(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(interval)


def volume_state(ec2: Any, volume_id: str) -> str:
    return str(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"])


def new_volume(ec2: Any, size: int = 1, zone: str = ZONE, **extra: Any) -> str:
    """Create a volume and wait until it is available."""
    volume_id = str(ec2.create_volume(AvailabilityZone=zone, Size=size, **extra)["VolumeId"])
    ec2.get_waiter("volume_available").wait(
        VolumeIds=[volume_id], WaiterConfig={"Delay": 0.1, "MaxAttempts": 200}
    )
    return volume_id


def fast_waiter(ec2: Any, name: str) -> Callable[..., None]:
    waiter = ec2.get_waiter(name)

    def wait(**kwargs: Any) -> None:
        waiter.wait(WaiterConfig={"Delay": 0.1, "MaxAttempts": 300}, **kwargs)

    return wait


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing, except in CI, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_root_and_loop() -> None:
    require_machine_marker("root, loop devices and mounts")
    require(os.geteuid() == 0, "needs root (loop devices, mounts)")
    require(os.path.exists("/dev/loop-control"), "needs /dev/loop-control (modprobe loop)")
    for tool in ("mkfs.ext4", "resize2fs", "blkid", "losetup"):
        require(shutil.which(tool) is not None, f"needs {tool} (apt-get install e2fsprogs)")
