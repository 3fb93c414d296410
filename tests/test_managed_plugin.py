"""The managed plugin (fakestor/ebs) in a dockerd of the tests' own, and the propagation lab's
Docker steps against it (what each container saw, next to each check).

The plugin's rootfs is built with mmdebstrap by devenv/plugin/build (cached in
.build/ by a hash of its inputs, so only the first run pays for it); the dockerd with the
plugin enabled is made once for the module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends import loop
from fakestor.lab import Lab
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


FINDMNT_ROW = re.compile(r"^ +\d+ +\d+ +\S+ +[└├│─ ]*(\S+) +\S+$")


def _after(lines: list[str], saw: str, ok: str) -> None:
    """`saw` is printed, and the check `ok` right after it."""
    assert saw in lines, "\n".join(lines)
    assert lines[lines.index(saw) + 1] == f"  ok: {ok}", "\n".join(lines)


def test_lab_docker_steps_show_what_each_container_saw(
    managed: Managed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", managed.docker.host)
    before = sorted((mount.root, mount.target) for mount in mount_table())
    output: dict[str, list[str]] = {}
    for step in ("step_private_bind", "step_shared_bind", "step_managed_plugin"):
        lines = output[step] = []
        lab = Lab(tmp_path / step, PLUGIN, lines.append)
        lab.root.mkdir()
        getattr(lab, step)()
    assert sorted((mount.root, mount.target) for mount in mount_table()) == before

    private = output["step_private_bind"]
    area = tmp_path / "step_private_bind" / "private-bind"
    assert f"    the host sees: ls -A {area / 'vol'} -> (nothing)" in private
    _after(private, "    the application container sees: ls -A /data -> (nothing)",
           "the application container sees an empty directory")  # fmt: skip
    _after(private, "    the plugin container sees: cat /mnt/volumes/vol/file -> data",
           "while the plugin container sees its volume")  # fmt: skip

    shared = output["step_shared_bind"]
    area = tmp_path / "step_shared_bind" / "shared-bind"
    assert f"    the host sees: cat {area / 'vol' / 'file'} -> data" in shared
    assert "    the application container sees: ls -A /data -> file" in shared
    _after(shared, "    the application container sees: cat /data/file -> data",
           "the application container sees the volume")  # fmt: skip

    plugin = output["step_managed_plugin"]
    target = next(
        line.rsplit(" has at ", 1)[1] for line in plugin if "the filesystem the host has at" in line
    )
    assert "    the application container sees: cat /data/file -> from-the-app" in plugin
    _after(plugin, f"    the host sees: cat {target}/data/file -> from-the-app",
           "the application container writes to it, the host reads it")  # fmt: skip
    mounted = [line for line in plugin if "its /data in /proc/self/mountinfo" in line]
    assert len(mounted) == 1 and re.search(
        r"-> /dev/\S+ (ext4|xfs), device \d+:\d+, root /data$", mounted[0]
    ), plugin
    # Where findmnt lists the volume twice (the data root is shared, so the propagated
    # mount's bind is its peer and the volume is copied under both), the lab says why.
    listed = [row[1] for line in plugin if (row := FINDMNT_ROW.match(line))]
    if listed.count(target) >= 2:
        explained = [line for line in plugin if "are the same filesystem" in line]
        assert explained and "copied by propagation" in explained[0], plugin
        assert any(" is hidden: mount " in line for line in plugin), plugin
