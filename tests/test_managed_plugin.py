"""The managed plugin (fakestor/ebs) in a dockerd of the tests' own, and devenv/up + down.

The plugin's rootfs is built with mmdebstrap by devenv/plugin/build (cached in
.build/ by a hash of its inputs, so only the first run pays for it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends import loop
from fakestor.mounts import mount_table
from tests.conftest import Server, require, require_root_and_loop, wait_for
from tests.docker_env import IMAGE, Dockerd, require_docker, running_dockerd

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "fakestor/ebs:latest"


def _require_build_tools() -> None:
    require_root_and_loop()
    require_docker()
    require(shutil.which("mmdebstrap") is not None, "needs mmdebstrap (apt-get install mmdebstrap)")


def _mount_points() -> list[str]:
    return [mount.target for mount in mount_table()]


def _propagation(target: str) -> str:
    result = subprocess.run(
        ["findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", target],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.split()[0]


class Managed:
    def __init__(self, docker: Dockerd, server: Server) -> None:
        self.docker = docker
        self.server = server
        self.ec2 = server.client()

    @property
    def plugin_id(self) -> str:
        return self.docker.run("plugin", "inspect", "--format", "{{.Id}}", PLUGIN).stdout.strip()

    @property
    def propagated_mount(self) -> Path:
        return self.docker.root / "data" / "plugins" / self.plugin_id / "propagated-mount"


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Managed]:
    _require_build_tools()
    root = tmp_path_factory.mktemp("managed")
    server = Server(
        data_dir=root / "fakestor", args=["--backend", "loopdev"], log_path=root / "server.log"
    )
    server.start()
    try:
        with running_dockerd() as docker:
            build = subprocess.run(
                [str(ROOT / "devenv" / "plugin" / "build"), PLUGIN],
                env={**os.environ, "DOCKER_HOST": docker.host},
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert build.returncode == 0, build.stdout + build.stderr
            docker.run("plugin", "set", PLUGIN, f"FAKESTOR_ENDPOINT={server.url}")
            docker.run("plugin", "enable", "--timeout", "300", PLUGIN)
            try:
                yield Managed(docker, server)
            finally:
                docker.run("plugin", "disable", "--force", PLUGIN, check=False)
                docker.run("plugin", "rm", "--force", PLUGIN, check=False)
    finally:
        ec2 = server.client()
        for volume in ec2.describe_volumes()["Volumes"]:
            if volume["Attachments"]:
                ec2.detach_volume(VolumeId=volume["VolumeId"], Force=True)
        wait_for(lambda: all(not v["Attachments"] for v in ec2.describe_volumes()["Volumes"]))
        server.stop()
        leaked = loop.bound_under(root)
        for device in leaked:
            loop.detach(device.path, force=True)
        assert not leaked, leaked


def test_managed_plugin_cycle_and_propagation(managed: Managed) -> None:
    docker = managed.docker
    name = "managed-vol"
    docker.run("volume", "create", "-d", PLUGIN, "-o", "size=1", name)
    docker.run(
        "run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE,
        "sh", "-c", "echo from-managed > /data/f",
    )  # fmt: skip
    holder = docker.run(
        "run", "-d", "--network", "none", "-v", f"{name}:/data", IMAGE, "sleep", "300"
    ).stdout.strip()
    try:
        assert docker.run("exec", holder, "cat", "/data/f").stdout == "from-managed\n"
        # The plugin mounted it in its own namespace; the host sees it under the
        # propagated mount, and that mount (and the volume's) is shared.
        target = str(managed.propagated_mount / name)
        assert target in _mount_points()
        assert _propagation(str(managed.propagated_mount)) == "shared"
        assert _propagation(target) == "shared"
        # The plugin's record of who uses what lives beside the mounts, outside the
        # plugin's root filesystem, which `docker plugin upgrade` replaces.
        state = json.loads(
            (managed.propagated_mount / ".fakestor-state" / "mounts.json").read_text()
        )
        assert len(state["mounts"][name]["mount_ids"]) == 1
        inspected: dict[str, Any] = json.loads(docker.run("volume", "inspect", name).stdout)[0]
        volume = managed.ec2.describe_volumes(VolumeIds=[inspected["Status"]["VolumeId"]])
        assert volume["Volumes"][0]["Attachments"][0]["State"] == "attached"
    finally:
        docker.run("rm", "-f", holder)
    docker.run("volume", "rm", name)
    assert (
        managed.ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
        == []
    )


def test_disabling_the_plugin_leaves_no_mount_or_device(managed: Managed) -> None:
    docker = managed.docker
    name = "managed-left"
    docker.run("volume", "create", "-d", PLUGIN, name)
    docker.run("run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE, "true")
    propagated = str(managed.propagated_mount)
    docker.run("plugin", "disable", "--force", PLUGIN)
    try:
        assert not [p for p in _mount_points() if p.startswith(propagated + "/")]
        assert not loop.bound_under(managed.server.data_dir)
    finally:
        docker.run("plugin", "enable", "--timeout", "300", PLUGIN)
    docker.run("volume", "rm", name)


def _machine_state() -> dict[str, Any]:
    return {
        "mounts": sorted(_mount_points()),
        "loops": sorted(d.backing_file for d in loop.bound_devices()),
        "plugins": sorted(os.listdir("/run/docker/plugins"))
        if os.path.isdir("/run/docker/plugins")
        else [],
        "links": sorted(os.listdir("/dev/disk/by-id")) if os.path.isdir("/dev/disk/by-id") else [],
    }


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: dockerd's sockets must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_devenv_up_then_down_leaves_the_machine_as_it_was(short_tmp: Path) -> None:
    _require_build_tools()
    tmp_path = short_tmp
    env = {
        **os.environ,
        "FAKESTOR_DATA_DIR": str(tmp_path / "data"),
        "FAKESTOR_LISTEN": "127.0.0.1:18779",
        "FAKESTOR_DOCKERD_ROOT": str(tmp_path / "docker"),
    }
    env.pop("DOCKER_HOST", None)
    before = _machine_state()
    up = subprocess.run(
        [str(ROOT / "devenv" / "up")], env=env, capture_output=True, text=True, timeout=900
    )
    try:
        log = tmp_path / "docker" / "dockerd.log"
        assert up.returncode == 0, (
            up.stdout + up.stderr + (log.read_text()[-3000:] if log.exists() else "")
        )
        assert "a second container reads:" in up.stdout
        assert "CreateSnapshot: snap-" in up.stdout
        assert "shared" in up.stdout and "propagated-mount/fakestor-demo" in up.stdout
        again = subprocess.run(
            [str(ROOT / "devenv" / "up")], env=env, capture_output=True, text=True, timeout=900
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout and "is up to date" in again.stdout
    finally:
        down = subprocess.run(
            [str(ROOT / "devenv" / "down"), "--purge"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    log = tmp_path / "docker" / "dockerd.log"
    assert down.returncode == 0, (
        down.stdout + down.stderr + (log.read_text() if log.exists() else "")
    )
    assert _machine_state() == before
    assert not (tmp_path / "data").exists()


def test_propagation_lab_runs_every_step(managed: Managed) -> None:
    """The lab end to end, Docker steps and the managed plugin's step included."""
    result = subprocess.run(
        [sys.executable, "-m", "fakestor", "lab", "propagation", "--plugin", PLUGIN],
        env={**os.environ, "DOCKER_HOST": managed.docker.host},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout, result.stdout
    assert result.stdout.count("  ok: ") >= 11, result.stdout
    assert "the application container sees an empty directory" in result.stdout
    assert "Docker refuses: the host path is not shared" in result.stdout
    assert "that mount is shared" in result.stdout
    assert "The machine's mounts are as they were before the lab." in result.stdout
