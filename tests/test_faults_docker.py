"""The README's "what your code does when EBS misbehaves" walkthrough: a container on a
fakestor volume (Docker plugin, fuse backend) meets read errors on one file's blocks, and
an impaired volume that blocks its I/O until EnableVolumeIO."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server, wait_for
from tests.docker_env import IMAGE, require_docker, running_dockerd
from tests.test_loopdev import require_backend
from tests.test_plugin_docker import Plugin, Stack

pytestmark = [pytest.mark.privileged, pytest.mark.docker]
FAULT_IO = "fakestor:fault/io"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_docker()
    require_backend("fuse")
    root = tmp_path_factory.mktemp("faults-docker")
    server = Server(
        data_dir=root / "fakestor", args=["--backend", "fuse"], log_path=root / "server.log"
    )
    server.start()
    plugin = Plugin(f"fakestor-faults-{os.getpid()}", server, root / "plugin")
    (root / "plugin").mkdir()
    try:
        plugin.start()
        with running_dockerd() as docker:
            yield Stack(docker, server, plugin, server.client())
            docker.run("rm", "-f", "faulty", check=False)
            for name in docker.run(
                "volume", "ls", "-q", "--filter", f"driver={plugin.name}"
            ).stdout.split():
                docker.run("volume", "rm", "-f", name, check=False)
    finally:
        plugin.stop()
        ec2 = server.client()
        for volume in ec2.describe_volumes()["Volumes"]:
            if volume["Attachments"]:
                ec2.detach_volume(VolumeId=volume["VolumeId"], Force=True)
        wait_for(
            lambda: all(not v["Attachments"] for v in ec2.describe_volumes()["Volumes"]), timeout=30
        )
        server.stop()
        assert "Traceback" not in plugin.log(), plugin.log()


def extents(path: Path) -> list[tuple[int, int]]:
    """The byte ranges of the device that hold the file's data (from filefrag)."""
    block = int(subprocess.run(
        ["stat", "-f", "-c", "%S", str(path)], capture_output=True, text=True, check=True
    ).stdout)  # fmt: skip
    listing = subprocess.run(
        ["filefrag", "-v", str(path)], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for match in re.finditer(r"^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):", listing, re.M):
        first, last = int(match.group(1)), int(match.group(2))
        found.append((first * block, (last + 1) * block))
    assert found, listing
    return found


def dd_in(stack: Stack, path: str) -> subprocess.CompletedProcess[str]:
    return stack.docker.run(
        "exec", "faulty", "dd", f"if={path}", "of=/dev/null", "bs=64k", "iflag=direct",
        check=False,
    )  # fmt: skip


def test_a_container_meets_read_errors_on_one_file_and_an_impaired_volume(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name, "size=1").returncode == 0
    stack.docker.run(
        "run", "-d", "--name", "faulty", "--network", "none", "-v", f"{name}:/data", IMAGE,
        "sh", "-c",
        "dd if=/dev/urandom of=/data/a bs=1M count=4 && dd if=/dev/urandom of=/data/b bs=1M "
        "count=4 && sync && touch /data/ready && sleep 600",
    )  # fmt: skip
    wait_for(lambda: dd_in(stack, "/data/ready").returncode == 0, timeout=60)
    volume_id = stack.ebs_volume(name)["VolumeId"]
    on_host = stack.plugin.mount_root / name / "data"  # the plugin mounts the data dir
    a, b = extents(on_host / "a"), extents(on_host / "b")
    start, end = a[0]
    assert all(e <= start or s >= end for s, e in b), (a, b)

    ec2 = stack.ec2
    ec2.create_tags(
        Resources=[volume_id], Tags=[{"Key": FAULT_IO, "Value": f"error:read:{start}-{end}"}]
    )
    failed = dd_in(stack, "/data/a")
    assert failed.returncode != 0 and "Input/output error" in failed.stderr, failed.stderr
    assert dd_in(stack, "/data/b").returncode == 0
    ec2.delete_tags(Resources=[volume_id], Tags=[{"Key": FAULT_IO}])
    assert dd_in(stack, "/data/a").returncode == 0

    ec2.create_tags(Resources=[volume_id], Tags=[{"Key": FAULT_IO, "Value": "impaired"}])
    status = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    assert status["VolumeStatus"]["Status"] == "impaired"
    done: list[subprocess.CompletedProcess[str]] = []
    reader = threading.Thread(target=lambda: done.append(dd_in(stack, "/data/b")))
    reader.start()
    time.sleep(2)
    assert reader.is_alive(), "I/O of an impaired volume should wait"
    ec2.enable_volume_io(VolumeId=volume_id)
    reader.join(60)
    assert done and done[0].returncode == 0, done
    stack.docker.run("rm", "-f", "faulty")
