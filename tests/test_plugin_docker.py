"""The volume plugin end to end: a real dockerd, the docker CLI, boto3 and the kernel.

The plugin runs on the host as a legacy plugin (a socket in /run/docker/plugins)
under a name of its own, against a fakestor server with the loopdev backend.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backends import loop
from fakestor.mounts import mount_table
from fakestor.plugin.ebs import FRESH_FOR
from tests.conftest import Server, wait_for
from tests.docker_env import IMAGE, Dockerd, require_docker, running_dockerd
from tests.test_loopdev import require_backend

pytestmark = [pytest.mark.privileged, pytest.mark.docker]


@dataclass
class Plugin:
    name: str
    server: Server
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return Path("/run/docker/plugins") / f"{self.name}.sock"

    @property
    def mount_root(self) -> Path:
        return self.root / "volumes"

    def start(self) -> None:
        log = (self.root / "plugin.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "fakestor", "plugin",
                "--socket", str(self.socket),
                "--endpoint", self.server.url,
                "--mount-root", str(self.mount_root),
                "--state-dir", str(self.root / "state"),
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: self.socket.exists() or self.process.poll() is not None)  # type: ignore[union-attr]
        assert self.process.poll() is None, self.log()

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=30) == 0, self.log()
            self.process = None

    def log(self) -> str:
        return (self.root / "plugin.log").read_text()


@dataclass
class Stack:
    docker: Dockerd
    server: Server
    plugin: Plugin
    ec2: Any

    def volume_name(self) -> str:
        return f"vol-{uuid.uuid4().hex[:10]}"

    def create(self, name: str, *options: str) -> subprocess.CompletedProcess[str]:
        args = ["volume", "create", "-d", self.plugin.name]
        for option in options:
            args += ["-o", option]
        return self.docker.run(*args, name, check=False)

    def run(self, name: str, command: str, *extra: str) -> str:
        return self.docker.run(
            "run", "--rm", "--network", "none", *extra, "-v", f"{name}:/data", IMAGE,
            "sh", "-c", command,
        ).stdout  # fmt: skip

    def ebs_volume(self, name: str) -> dict[str, Any]:
        found = self.ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])
        volumes: list[dict[str, Any]] = found["Volumes"]
        assert len(volumes) == 1, volumes
        return volumes[0]


@pytest.fixture(scope="module", params=["loopdev", "fuse"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The whole suite runs once per block backend."""
    require_docker()
    require_backend(request.param)
    root = tmp_path_factory.mktemp("docker-e2e")
    server = Server(
        data_dir=root / "fakestor", args=["--backend", request.param], log_path=root / "server.log"
    )
    server.start()
    plugin = Plugin(f"fakestor-e2e-{os.getpid()}", server, root / "plugin")
    (root / "plugin").mkdir()
    try:
        plugin.start()
        with running_dockerd() as docker:
            yield Stack(docker, server, plugin, server.client())
            for name in docker.run(
                "volume", "ls", "-q", "--filter", f"driver={plugin.name}"
            ).stdout.split():
                docker.run("volume", "rm", "-f", name, check=False)
    finally:
        if plugin.process is not None:
            plugin.stop()
        ec2 = server.client()
        for volume in ec2.describe_volumes()["Volumes"]:
            if volume["Attachments"]:
                ec2.detach_volume(VolumeId=volume["VolumeId"], Force=True)
        wait_for(
            lambda: all(not v["Attachments"] for v in ec2.describe_volumes()["Volumes"]), timeout=30
        )
        server.stop()
        leaked = loop.bound_under(root)
        mounts = [m.target for m in mount_table() if m.target.startswith(str(root))]
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", point], check=False)
        for device in leaked:
            loop.detach(device.path, force=True)
        assert not leaked, f"leaked loop devices: {leaked}"
        assert not mounts, f"leaked mounts: {mounts}"
        assert "Traceback" not in plugin.log(), plugin.log()


def _attachments(stack: Stack, name: str) -> list[str]:
    return [a["State"] for a in stack.ebs_volume(name)["Attachments"]]


def test_create_write_read_inspect_list_remove(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name, "size=2", "type=gp3").returncode == 0
    volume = stack.ebs_volume(name)
    assert (volume["Size"], volume["VolumeType"], volume["State"]) == (2, "gp3", "available")

    stack.run(name, "head -c 1048576 /dev/urandom > /data/blob && sha256sum /data/blob > /data/sum")
    assert _attachments(stack, name) == []  # detached again after the container
    assert stack.run(name, "cd /data && sha256sum -c sum").strip() == "/data/blob: OK"

    inspected = json.loads(stack.docker.run("volume", "inspect", name).stdout)[0]
    assert inspected["Driver"] == stack.plugin.name
    assert inspected["Scope"] == "global"
    assert inspected["Status"]["VolumeId"] == volume["VolumeId"]
    assert inspected["Status"]["State"] == "available"
    listed = stack.docker.run("volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout
    assert f"{stack.plugin.name} {name}" in listed.splitlines()

    stack.docker.run("volume", "rm", name)
    # Remove returns once EBS has accepted the delete; EBS finishes it on its own.
    found = stack.ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
    assert all(v["State"] in ("deleting", "deleted") for v in found), found
    assert name not in stack.docker.run("volume", "ls", "-q").stdout.split()
    wait_for(
        lambda: (
            not stack.ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])[
                "Volumes"
            ]
        )
    )


def test_attached_only_while_in_use_and_two_containers_share(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name).returncode == 0
    first = stack.docker.run(
        "run", "-d", "--network", "none", "-v", f"{name}:/data", IMAGE, "sleep", "300"
    ).stdout.strip()
    second = stack.docker.run(
        "run", "-d", "--network", "none", "-v", f"{name}:/data", IMAGE, "sleep", "300"
    ).stdout.strip()
    try:
        assert _attachments(stack, name) == ["attached"]
        stack.docker.run("exec", first, "sh", "-c", "echo shared > /data/note")
        assert stack.docker.run("exec", second, "cat", "/data/note").stdout == "shared\n"
        stack.docker.run("rm", "-f", first)
        # The other container still uses it: still mounted and attached.
        assert stack.docker.run("exec", second, "cat", "/data/note").stdout == "shared\n"
        assert _attachments(stack, name) == ["attached"]
        result = stack.docker.run("volume", "rm", name, check=False)
        assert result.returncode != 0 and "in use" in result.stderr
    finally:
        stack.docker.run("rm", "-f", first, second, check=False)
    wait_for(lambda: _attachments(stack, name) == [])
    assert not (stack.plugin.mount_root / name).exists()


def test_plugin_restart_while_a_container_holds_the_volume(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name).returncode == 0
    holder = stack.docker.run(
        "run", "-d", "--network", "none", "-v", f"{name}:/data", IMAGE,
        "sh", "-c", "echo before > /data/f; sleep 300",
    ).stdout.strip()  # fmt: skip
    try:
        wait_for(
            lambda: (
                stack.docker.run("exec", holder, "cat", "/data/f", check=False).stdout == "before\n"
            )
        )
        stack.plugin.stop()
        stack.plugin.start()
        # Nothing was unmounted: the container still writes to the volume.
        stack.docker.run("exec", holder, "sh", "-c", "echo after >> /data/f")
        assert _attachments(stack, name) == ["attached"]
    finally:
        stack.docker.run("rm", "-f", holder)
    wait_for(lambda: _attachments(stack, name) == [])
    assert stack.run(name, "cat /data/f") == "before\nafter\n"


def test_create_from_a_boto3_snapshot(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name).returncode == 0
    stack.run(name, "echo original > /data/f")
    snapshot_id = stack.ec2.create_snapshot(VolumeId=stack.ebs_volume(name)["VolumeId"])[
        "SnapshotId"
    ]
    stack.ec2.get_waiter("snapshot_completed").wait(
        SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    stack.run(name, "echo changed > /data/f")
    restored = stack.volume_name()
    assert stack.create(restored, f"snapshot={snapshot_id}", "size=3").returncode == 0
    assert stack.ebs_volume(restored)["Size"] == 3
    assert stack.run(restored, "cat /data/f") == "original\n"


def _data_bytes(stack: Stack, name: str) -> int:
    """The size of the filesystem a container sees at /data."""
    return int(stack.run(name, "df -k /data | tail -1").split()[1]) * 1024


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_the_filesystem_grows_with_the_volume(stack: Stack, fstype: str) -> None:
    name = stack.volume_name()
    assert stack.create(name, "size=1", f"fstype={fstype}").returncode == 0
    stack.run(name, "echo kept > /data/f")
    assert _data_bytes(stack, name) < 1024**3
    volume_id = stack.ebs_volume(name)["VolumeId"]

    # ModifyVolume grows the device; the next mount grows the filesystem to fill it.
    stack.ec2.modify_volume(VolumeId=volume_id, Size=2)
    wait_for(
        lambda: (
            stack.ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"][
                0
            ]["ModificationState"]
            in ("optimizing", "completed")
        )
    )
    assert _data_bytes(stack, name) > 1.8 * 1024**3
    assert stack.run(name, "cat /data/f") == "kept\n"
    assert f"{name}: grew its {fstype} filesystem" in stack.plugin.log()

    # A restore to a larger size does too.
    snapshot_id = stack.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    stack.ec2.get_waiter("snapshot_completed").wait(
        SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    restored = stack.volume_name()
    assert stack.create(restored, f"snapshot={snapshot_id}", "size=3").returncode == 0
    assert _data_bytes(stack, restored) > 2.7 * 1024**3
    assert stack.run(restored, "cat /data/f") == "kept\n"
    stack.docker.run("volume", "rm", name, restored)
    stack.ec2.delete_snapshot(SnapshotId=snapshot_id)


def test_adopts_volumes_made_with_the_aws_api(stack: Stack) -> None:
    name = stack.volume_name()
    made = stack.ec2.create_volume(
        AvailabilityZone="us-east-1a",
        Size=1,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": name}]}],
    )
    stack.ec2.get_waiter("volume_available").wait(
        VolumeIds=[made["VolumeId"]], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    listed = stack.docker.run("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert name in listed
    assert stack.create(name).returncode == 0
    assert stack.ebs_volume(name)["VolumeId"] == made["VolumeId"]  # adopted, not a second one
    assert stack.run(name, "echo adopted > /data/f; cat /data/f") == "adopted\n"


def test_ownership_mode_and_xfs(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name, "fstype=xfs", "uid=1000", "gid=2000", "mode=0750").returncode == 0
    out = stack.run(name, "stat -c '%u %g %a' /data; grep ' /data ' /proc/mounts")
    lines = out.splitlines()
    assert lines[0] == "1000 2000 750"
    assert " xfs " in lines[1]


def test_concurrent_first_mounts_attach_once(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name).returncode == 0

    def start(index: int) -> str:
        return stack.docker.run(
            "run", "-d", "--network", "none", "-v", f"{name}:/data", IMAGE,
            "sh", "-c", f"echo {index} > /data/c{index}; sleep 300",
        ).stdout.strip()  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        containers = list(pool.map(start, range(4)))
    try:
        assert _attachments(stack, name) == ["attached"]
        wait_for(
            lambda: (
                stack.docker.run("exec", containers[0], "ls", "/data").stdout.split()
                == ["c0", "c1", "c2", "c3"]
            )
        )
    finally:
        stack.docker.run("rm", "-f", *containers)
    wait_for(lambda: _attachments(stack, name) == [])


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["colour=red"], "unknown option colour; valid options are size, type"),
        (["size=big"], "size='big' must be a whole number"),
        (["size=0"], "out of range"),
        (["type=ssd"], "not an EBS volume type"),
        (["fstype=ntfs"], "ext4 or xfs"),
        (["encrypted=maybe"], "true or false"),
        (["mode=rwx"], "octal"),
        (["uid=-1"], "whole number"),
        (["snapshot=snap-123"], "not a snapshot id"),
        (["snapshot=snap-0123456789abcdef0"], "InvalidSnapshot.NotFound"),
        (["type=io1", "size=10"], "iops"),
        (["type=gp3", "iops=100"], "InvalidParameterValue"),
        (["size=70000", "type=gp3"], "out of range"),
        (["type=st1", "size=10"], "125"),
    ],
)
def test_invalid_options_are_refused_at_create(
    stack: Stack, options: list[str], words: str
) -> None:
    name = stack.volume_name()
    result = stack.create(name, *options)
    assert result.returncode != 0
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        stack.ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
        == []
    )


def test_a_volume_attached_elsewhere_is_refused_clearly(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name).returncode == 0
    volume_id = stack.ebs_volume(name)["VolumeId"]
    other = stack.ec2.run_instances(ImageId="ami-00000000000000001", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    stack.ec2.get_waiter("instance_running").wait(
        InstanceIds=[other], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    stack.ec2.attach_volume(VolumeId=volume_id, InstanceId=other, Device="/dev/sdf")
    result = stack.docker.run(
        "run", "--rm", "--network", "none", "-v", f"{name}:/data", IMAGE, "true", check=False
    )
    assert result.returncode != 0
    assert f"attached to instance {other}" in result.stderr
    removal = stack.docker.run("volume", "rm", name, check=False)
    assert removal.returncode != 0 and other in removal.stderr
    stack.ec2.terminate_instances(InstanceIds=[other])
    wait_for(lambda: _attachments(stack, name) == [])


def _mounts_of(stack: Stack, name: str) -> list[str]:
    target = str(stack.plugin.mount_root / name)
    return [mount.target for mount in mount_table() if mount.target == target]


def test_dockerd_restart_keeps_volumes_in_use_and_leaks_nothing(stack: Stack) -> None:
    name = stack.volume_name()
    assert stack.create(name).returncode == 0
    keeper = stack.docker.run(
        "run", "-d", "--restart", "always", "--network", "none", "-v", f"{name}:/data", IMAGE,
        "sh", "-c", "echo run >> /data/runs; sleep 300",
    ).stdout.strip()  # fmt: skip
    idle = stack.volume_name()
    assert stack.create(idle).returncode == 0
    stack.docker.run("run", "-d", "--network", "none", "-v", f"{idle}:/data", IMAGE, "sleep", "300")
    try:
        wait_for(lambda: _attachments(stack, name) == ["attached"])
        stack.docker.stop()
        stack.docker.start()

        def running() -> bool:
            state = stack.docker.run("inspect", "-f", "{{.State.Running}}", keeper).stdout
            return state.strip() == "true"

        wait_for(running, timeout=60)
        wait_for(
            lambda: (
                stack.docker.run("exec", keeper, "cat", "/data/runs", check=False).stdout
                == "run\nrun\n"
            )
        )
        assert _attachments(stack, name) == ["attached"]
        assert len(_mounts_of(stack, name)) == 1
        # The container that was not restarted gave its volume back.
        wait_for(lambda: _attachments(stack, idle) == [])
        assert _mounts_of(stack, idle) == []
    finally:
        stack.docker.run("rm", "-f", keeper, check=False)
    wait_for(lambda: _attachments(stack, name) == [])
    assert _mounts_of(stack, name) == []


def _plugin_call(stack: Stack, endpoint: str, body: str) -> dict[str, Any]:
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(str(stack.plugin.socket))
    request = (
        f"POST /{endpoint} HTTP/1.0\r\nHost: plugin\r\n"
        f"Content-Type: application/vnd.docker.plugins.v1.2+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    connection.sendall(request.encode())
    reply = b""
    while chunk := connection.recv(65536):
        reply += chunk
    connection.close()
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    result: dict[str, Any] = json.loads(payload)
    return result


def test_protocol_endpoints_directly(stack: Stack) -> None:
    assert _plugin_call(stack, "Plugin.Activate", "{}") == {"Implements": ["VolumeDriver"]}
    assert _plugin_call(stack, "VolumeDriver.Capabilities", "{}") == {
        "Capabilities": {"Scope": "global"}
    }
    name = stack.volume_name()
    assert _plugin_call(stack, "VolumeDriver.Create", json.dumps({"Name": name, "Opts": None})) == {
        "Err": ""
    }
    assert _plugin_call(stack, "VolumeDriver.Path", json.dumps({"Name": name}))["Mountpoint"] == ""
    mounted = _plugin_call(stack, "VolumeDriver.Mount", json.dumps({"Name": name, "ID": "a"}))
    assert mounted["Err"] == "" and mounted["Mountpoint"].endswith(f"/{name}/data")
    again = _plugin_call(stack, "VolumeDriver.Mount", json.dumps({"Name": name, "ID": "b"}))
    assert again["Mountpoint"] == mounted["Mountpoint"]
    path = _plugin_call(stack, "VolumeDriver.Path", json.dumps({"Name": name}))
    assert path["Mountpoint"] == mounted["Mountpoint"]
    got = _plugin_call(stack, "VolumeDriver.Get", json.dumps({"Name": name}))["Volume"]
    assert got["Status"]["State"] == "in-use" and got["Mountpoint"] == mounted["Mountpoint"]
    listed = _plugin_call(stack, "VolumeDriver.List", "{}")["Volumes"]
    assert {"Name": name, "Mountpoint": mounted["Mountpoint"]} in listed
    assert _plugin_call(stack, "VolumeDriver.Unmount", json.dumps({"Name": name, "ID": "a"})) == {
        "Err": ""
    }
    assert _attachments(stack, name) == ["attached"]  # "b" still holds it
    _plugin_call(stack, "VolumeDriver.Unmount", json.dumps({"Name": name, "ID": "b"}))
    assert _attachments(stack, name) == []
    assert _plugin_call(stack, "VolumeDriver.Remove", json.dumps({"Name": name})) == {"Err": ""}
    missing = _plugin_call(stack, "VolumeDriver.Get", json.dumps({"Name": name}))
    assert "no EBS volume is tagged" in missing["Err"]
    assert "JSON object" in _plugin_call(stack, "VolumeDriver.Mount", "[1, 2]")["Err"]
    assert "no volume Name" in _plugin_call(stack, "VolumeDriver.Mount", "{}")["Err"]


def _call(stack: Stack, endpoint: str, **body: Any) -> dict[str, Any]:
    return _plugin_call(stack, f"VolumeDriver.{endpoint}", json.dumps(body))


def test_get_after_a_delete_through_the_ec2_api_reports_the_volume_gone(stack: Stack) -> None:
    name = stack.volume_name()
    assert _call(stack, "Create", Name=name, Opts={"size": "1"}) == {"Err": ""}
    seen = _call(stack, "Get", Name=name)["Volume"]
    assert seen["Mountpoint"] == "" and seen["Status"]["State"] == "available"
    stack.ec2.delete_volume(VolumeId=seen["Status"]["VolumeId"])
    # Get may answer from what the plugin saw for FRESH_FOR seconds (the EC2 API is
    # eventually consistent too); after that it asks EBS again.
    time.sleep(FRESH_FOR + 0.1)
    assert "no EBS volume is tagged" in _call(stack, "Get", Name=name)["Err"]
    assert _call(stack, "Path", Name=name) == {"Mountpoint": "", "Err": ""}
    assert name not in [v["Name"] for v in _call(stack, "List")["Volumes"]]
    assert "no EBS volume is tagged" in _call(stack, "Mount", Name=name, ID="a")["Err"]
    assert _call(stack, "Remove", Name=name) == {"Err": ""}


def test_a_volume_deleted_elsewhere_right_after_get_is_not_mounted(stack: Stack) -> None:
    """Mount and Remove right after Get use the volume as Get saw it; EBS corrects them."""
    name = stack.volume_name()
    assert _call(stack, "Create", Name=name, Opts={"size": "1"}) == {"Err": ""}
    volume_id = _call(stack, "Get", Name=name)["Volume"]["Status"]["VolumeId"]
    stack.ec2.delete_volume(VolumeId=volume_id)
    mounted = _call(stack, "Mount", Name=name, ID="a")
    assert volume_id in mounted["Err"] and "cannot attach" in mounted["Err"], mounted
    assert _call(stack, "Path", Name=name) == {"Mountpoint": "", "Err": ""}
    assert not (stack.plugin.mount_root / name).exists()
    assert _call(stack, "Remove", Name=name) == {"Err": ""}


def test_docker_cp_on_a_running_container_leaves_its_volume_mounted(
    stack: Stack, tmp_path: Path
) -> None:
    """`docker cp` Mounts the running container's volumes again under the same ID and
    Unmounts them after: each Mount of an ID is counted, so the volume stays."""
    name = stack.volume_name()
    assert stack.create(name).returncode == 0
    holder = stack.docker.run(
        "run", "-d", "--network", "none", "-v", f"{name}:/data", IMAGE,
        "sh", "-c", "echo kept > /data/f; sleep 300",
    ).stdout.strip()  # fmt: skip
    try:
        wait_for(lambda: stack.docker.run("exec", holder, "cat", "/data/f", check=False).stdout)
        stack.docker.run("cp", f"{holder}:/data/f", str(tmp_path / "copied"))
        assert (tmp_path / "copied").read_text() == "kept\n"
        assert _attachments(stack, name) == ["attached"]
        assert stack.docker.run("exec", holder, "cat", "/data/f").stdout == "kept\n"
    finally:
        stack.docker.run("rm", "-f", holder)
    wait_for(lambda: _attachments(stack, name) == [])
    assert _mounts_of(stack, name) == []


def test_the_same_mount_id_twice_needs_two_unmounts(stack: Stack) -> None:
    name = stack.volume_name()
    assert _call(stack, "Create", Name=name) == {"Err": ""}
    first = _call(stack, "Mount", Name=name, ID="c1")
    assert _call(stack, "Mount", Name=name, ID="c1") == first
    _call(stack, "Unmount", Name=name, ID="c1")
    assert _attachments(stack, name) == ["attached"]
    assert _call(stack, "Path", Name=name)["Mountpoint"] == first["Mountpoint"]
    _call(stack, "Unmount", Name=name, ID="c1")
    assert _attachments(stack, name) == [] and _mounts_of(stack, name) == []
    assert _call(stack, "Remove", Name=name) == {"Err": ""}


@pytest.mark.parametrize("bad", ["../escape", "a/b", ".hidden", "-dash", ""])
def test_names_that_are_not_one_path_component_are_refused(stack: Stack, bad: str) -> None:
    for endpoint in ("Create", "Mount", "Get", "Remove"):
        answer = _call(stack, endpoint, Name=bad, ID="x")
        assert answer["Err"], (endpoint, answer)
        assert ("not valid" in answer["Err"]) or (bad == "" and "no volume Name" in answer["Err"])
    assert (
        stack.ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [bad or "-"]}])[
            "Volumes"
        ]
        == []
    )


def test_a_failed_mount_is_undone(stack: Stack) -> None:
    """Docker sends no Unmount after a failed Mount: the plugin detaches by itself."""
    name = stack.volume_name()
    stack.ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=1,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [
            {"Key": "Name", "Value": name}, {"Key": "fakestor:fstype", "Value": "btrfs"}]}],
    )  # fmt: skip
    wait_for(lambda: stack.ebs_volume(name)["State"] == "available")
    failed = _call(stack, "Mount", Name=name, ID="c1")
    assert "cannot format as btrfs" in failed["Err"]
    assert _attachments(stack, name) == [] and _mounts_of(stack, name) == []
    assert _call(stack, "Path", Name=name)["Mountpoint"] == ""
    assert _call(stack, "Remove", Name=name) == {"Err": ""}


def test_a_mount_gone_while_the_plugin_was_down_is_released_at_start(stack: Stack) -> None:
    """After a reboot (here: an umount behind the plugin's back) nobody will Unmount the
    recorded IDs; the plugin detaches the volume so other instances can have it."""
    name = stack.volume_name()
    assert _call(stack, "Create", Name=name) == {"Err": ""}
    assert _call(stack, "Mount", Name=name, ID="c1")["Err"] == ""
    stack.plugin.stop()
    try:
        subprocess.run(["umount", str(stack.plugin.mount_root / name)], check=True)
    finally:
        stack.plugin.start()
    assert _attachments(stack, name) == []
    assert _call(stack, "Path", Name=name)["Mountpoint"] == ""
    assert _call(stack, "Remove", Name=name) == {"Err": ""}
