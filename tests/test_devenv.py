"""devenv/up, devenv/down and the README's examples, end to end, in a dockerd and data dir of
the test's own.

One test, since each step needs the stack the one before left: a first devenv/up (the
plugin's build is cached in .build/) and its demo, the README's examples and up's banner
(devenv/check-readme), a second devenv/up that finds everything running, a dockerd that
an older devenv/down left with records of the plugin's volumes (devenv/up says why it
waits), devenv/down keeping the EBS volumes while dockerd forgets them, a devenv/up that
no longer waits and finds the data, and devenv/down --purge leaving the machine as it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends import loop
from tests.conftest import require, require_root_and_loop, wait_for
from tests.docker_env import require_docker

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
IMAGE = "fakestor/busybox:latest"  # what devenv/up imports


def _machine_state() -> dict[str, Any]:
    def listing(directory: str) -> list[str]:
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []

    return {
        "mounts": sorted(
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ),
        "loops": sorted(d.backing_file for d in loop.bound_devices()),
        "plugin sockets": listing("/run/docker/plugins"),
        "links": listing("/dev/disk/by-id"),
        "legacy plugin dir": os.path.exists("/var/lib/fakestor-plugin"),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Stack:
    """devenv's scripts with the settings that keep them apart from the machine's own."""

    def __init__(self, base: Path) -> None:
        self.data_dir = base / "data"
        self.dockerd_root = base / "docker"
        self.env = {
            **os.environ,
            "FAKESTOR_DATA_DIR": str(self.data_dir),
            "FAKESTOR_LISTEN": f"127.0.0.1:{_free_port()}",
            "FAKESTOR_DOCKERD_ROOT": str(self.dockerd_root),
        }
        self.env.pop("DOCKER_HOST", None)

    def run(self, script: str, *args: str, timeout: float = 900) -> tuple[str, float]:
        """Run devenv/SCRIPT; its output, and how long it took."""
        started = time.monotonic()
        result = subprocess.run(
            [str(ROOT / "devenv" / script), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        output = result.stdout + result.stderr
        log = self.dockerd_root / "dockerd.log"
        assert result.returncode == 0, f"devenv/{script} failed:\n{output}" + (
            log.read_text()[-3000:] if log.exists() else ""
        )
        return output, time.monotonic() - started

    def docker(self, *args: str) -> str:
        result = subprocess.run(
            [DOCKER, "--host", f"unix://{self.dockerd_root}/docker.sock", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
        return result.stdout

    def stop_dockerd_as_an_older_down_did(self) -> None:
        """Remove the plugin while dockerd still has records of its volumes, stop dockerd."""
        self.docker("plugin", "disable", "--force", "fakestor/ebs:latest")
        self.docker("plugin", "rm", "--force", "fakestor/ebs:latest")
        pid_file = self.data_dir / "dockerd.pid"
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, interval=0.2)
        pid_file.unlink()


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A short base path (dockerd's sockets must fit in 108 bytes); purged afterwards."""
    base = Path(tempfile.mkdtemp(prefix="fsu-", dir="/tmp"))
    stack = Stack(base)
    try:
        yield stack
    finally:
        subprocess.run(
            [str(ROOT / "devenv" / "down"), "--purge"],
            env=stack.env, capture_output=True, timeout=300,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def test_up_readme_down_up_keeps_the_volumes_and_leaves_the_machine_as_it_was(
    stack: Stack,
) -> None:
    require_root_and_loop()
    require_docker()
    require(shutil.which("mmdebstrap") is not None, "needs mmdebstrap (apt-get install mmdebstrap)")
    before = _machine_state()
    # A dockerd data-root that was there before devenv/up: devenv/down keeps it, and with it
    # dockerd's own records of volumes.
    (stack.dockerd_root / "data").mkdir(parents=True)

    first_up, _ = stack.run("up")
    banner = first_up.rsplit("fakestor is up", 1)[1]
    assert f"source {stack.data_dir}/env" in banner
    (stack.data_dir / "up.out").write_text(first_up)
    checked, _ = stack.run("check-readme", "--banner", str(stack.data_dir / "up.out"))
    assert "0 failed" in checked, checked
    # up's demo: a second container reads the first's data, a snapshot, the shared mount.
    assert "a second container reads:" in first_up and "CreateSnapshot: snap-" in first_up
    assert "shared" in first_up and "propagated-mount/fakestor-demo" in first_up
    again, _ = stack.run("up")
    assert "already running" in again and "is up to date" in again, again

    stack.docker("volume", "create", "-d", "fakestor/ebs", "kept")
    stack.docker(
        "run", "--rm", "--network", "none", "-v", "kept:/data", IMAGE,
        "sh", "-c", "echo still-here > /data/f",
    )  # fmt: skip
    stack.docker("volume", "rm", "fakestor-demo")  # one record left below, not two

    # What an older devenv/down left: records of volumes whose plugin is gone. dockerd
    # retries about 15 s for each; devenv/up says so while it waits.
    stack.stop_dockerd_as_an_older_down_did()
    stalled_up, _ = stack.run("up")
    assert "dockerd is looking for plugin fakestor/ebs:latest" in stalled_up, stalled_up
    assert "dockerd gave up on its record of volume kept" in stalled_up, stalled_up

    down, _ = stack.run("down")
    assert "dockerd forgets its" in down and "kept" in down, down
    assert not (stack.dockerd_root / "exec").exists(), "the exec-root devenv/up's dockerd made"
    assert (stack.dockerd_root / "data").is_dir(), "the data-root that was there before"
    assert (stack.data_dir / "state.db").exists()
    assert not (stack.data_dir / "env").exists()

    second_up, _ = stack.run("up")
    assert "looking for plugin" not in second_up, second_up
    assert "kept" in stack.docker("volume", "ls", "-q")
    read = stack.docker(
        "run", "--rm", "--network", "none", "-v", "kept:/data", IMAGE, "cat", "/data/f"
    )
    assert read == "still-here\n"

    purged, _ = stack.run("down", "--purge")
    assert "dockerd forgets its" in purged, purged
    assert not stack.data_dir.exists()
    assert _machine_state() == before
