"""The node agent and the NBD data plane, as root: a second instance's agent gets real
devices for its attachments, over nbdkit exports the server opens and closes.

One machine plays both sides: the agent's links go to a temp --dev-root.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from backends import loop
from fakestor.device_names import by_id_path
from tests.conftest import (
    Server,
    ServerFactory,
    require,
    require_root_and_loop,
    wait_for,
)

pytestmark = pytest.mark.privileged

NODE_IMAGE = "ami-00000000000000001"


def _require(backend: str) -> None:
    require_root_and_loop()
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse (modprobe fuse)")
    for tool in ("nbdkit", "nbdfuse", "nbdinfo", "fusermount3"):
        require(shutil.which(tool) is not None, f"needs {tool} (apt-get install nbdkit libnbd-bin)")


class Node:
    """A `fakestor node` process started by a test."""

    def __init__(
        self,
        server: Server,
        root: Path,
        instance_id: str | None,
        *,
        endpoint: str | None = None,
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.server = server
        self.endpoint = endpoint or server.url
        self.prefix = prefix  # runs the agent elsewhere: ip netns exec NAME
        self.data_dir = root / "node"
        self.dev_root = root / "dev"
        self.log_path = root / "node.log"
        self.instance_id = instance_id
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        command = [
            *self.prefix, sys.executable, "-m", "fakestor", "node", "--endpoint", self.endpoint,
            "--data-dir", str(self.data_dir), "--dev-root", str(self.dev_root),
            "--reconnect-seconds", "2", *extra,
        ]  # fmt: skip
        if self.instance_id:
            command += ["--instance-id", self.instance_id]
        log = self.log_path.open("ab")
        offset = log.tell()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)

        def ready() -> str | None:
            text = self.log_path.read_bytes()[offset:].decode()
            assert self.process is not None and self.process.poll() is None, text
            for line in text.splitlines():
                if line.startswith("fakestor node ready: instance "):
                    return line.split()[4]
            return None

        self.instance_id = wait_for(ready, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
            self.process = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def link(self, volume_id: str) -> Path:
        return by_id_path(volume_id, self.dev_root / "disk" / "by-id")


def _processes(word: str) -> list[int]:
    """Pids of nbdkit/nbdfuse processes whose command line holds `word` (a temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        name = command.split(b"\0")[0]
        if name.endswith((b"nbdkit", b"nbdfuse")) and word.encode() in command:
            found.append(int(entry.name))
    return found


@pytest.fixture
def cluster(
    start_server: ServerFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Server, Node, Any]]:
    """A server on `backend`, a second instance and its running agent; afterwards nothing
    of theirs is left: no nbdkit, nbdfuse, loop device, mount or link."""
    backend, _, tls = request.param.partition("-")
    _require(backend)
    server = start_server(
        *(["--node-tls"] if tls else []), backend=backend, data_dir=tmp_path / "data"
    )
    ec2 = server.client()
    node = Node(server, tmp_path, None)
    try:
        node.start()
        yield server, node, ec2
    finally:
        if node.process is not None:
            node.stop()
        for point in [m.split()[1] for m in Path("/proc/mounts").read_text().splitlines()]:
            if point.startswith(str(tmp_path / "mnt")):
                subprocess.run(["umount", "-l", point], check=False)
        if server.process is not None:
            server.stop()

    def leftovers() -> list[object]:
        return [
            *_processes(str(tmp_path)),
            *loop.bound_under(tmp_path),
            *[m for m in Path("/proc/mounts").read_text().splitlines() if str(tmp_path) in m],
        ]

    try:
        wait_for(lambda: not leftovers(), timeout=20)
    finally:
        left = leftovers()
        _force_clean(tmp_path)
    assert not left
    links = list((tmp_path / "dev").rglob("*vol*")) if (tmp_path / "dev").exists() else []
    assert not links


def _force_clean(root: Path) -> None:
    """Release whatever a failed test left under `root`, so the next test starts clean."""
    for device in loop.bound_under(root):
        loop.detach(device.path, force=True)
    for line in Path("/proc/mounts").read_text().splitlines():
        if str(root) in line.split()[1]:
            subprocess.run(["umount", "-l", line.split()[1]], check=False)
    for pid in _processes(str(root)):
        os.kill(pid, signal.SIGKILL)


def _aligned(data: bytes) -> mmap.mmap:
    """A page-aligned buffer holding `data`, as O_DIRECT needs."""
    buffer = mmap.mmap(-1, len(data))
    buffer.write(data)
    return buffer


def _attachment(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    found = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
    return found[0] if found else None


def _state(ec2: Any, volume_id: str) -> str:
    attachment = _attachment(ec2, volume_id)
    return attachment["State"] if attachment else "detached"


def _new_volume(ec2: Any) -> str:
    volume_id = str(ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"])
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"]
             == "available")  # fmt: skip
    return volume_id


def _mount(device: Path, point: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", str(device), str(point)], check=True)


@pytest.mark.parametrize("cluster", ["loopdev", "fuse-tls"], indirect=True)
def test_a_volume_moves_between_a_node_and_the_host(
    cluster: tuple[Server, Node, Any], tmp_path: Path
) -> None:
    server, node, ec2 = cluster
    assert node.instance_id is not None
    instance = ec2.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0]
    assert instance["Instances"][0]["ImageId"] == NODE_IMAGE
    volume_id = _new_volume(ec2)

    ec2.attach_volume(VolumeId=volume_id, InstanceId=node.instance_id, Device="/dev/sdf")
    link = node.link(volume_id)
    seen: list[str] = []

    def attached() -> bool:
        state = _state(ec2, volume_id)
        seen.append(state)
        if state == "attached":
            # Attached only once the node has the device.
            assert link.is_symlink() and Path(os.path.realpath(link)).is_block_device()
            return True
        return False

    wait_for(attached, timeout=30)
    device = os.path.realpath(link)
    assert os.readlink(node.dev_root / "fakestor" / "sdf") == device
    assert os.readlink(node.dev_root / "fakestor" / "xvdf") == device
    assert loop.size_bytes(device) == 1024**3

    subprocess.run(["mkfs.ext4", "-q", device], check=True)
    point = tmp_path / "mnt" / "node"
    _mount(Path(device), point)
    (point / "data").write_bytes(b"written on the node\n" * 1000)
    # Mounted: a detach waits, as EBS's does.
    ec2.detach_volume(VolumeId=volume_id)
    time.sleep(2)
    assert _state(ec2, volume_id) == "detaching"
    subprocess.run(["umount", str(point)], check=True)
    wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)
    assert not link.exists()

    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdg")
    wait_for(lambda: _state(ec2, volume_id) == "attached", timeout=30)
    host_device = _attachment(ec2, volume_id)
    assert host_device is not None
    host_link = by_id_path(volume_id)
    point = tmp_path / "mnt" / "host"
    _mount(host_link, point)
    try:
        assert (point / "data").read_bytes() == b"written on the node\n" * 1000
    finally:
        subprocess.run(["umount", str(point)], check=True)
    ec2.detach_volume(VolumeId=volume_id)
    wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)


@pytest.mark.parametrize("cluster", ["loopdev"], indirect=True)
def test_a_forced_detach_fences_the_node(cluster: tuple[Server, Node, Any], tmp_path: Path) -> None:
    server, node, ec2 = cluster
    assert node.instance_id is not None
    volume_id = _new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=node.instance_id, Device="/dev/sdf")
    wait_for(lambda: _state(ec2, volume_id) == "attached", timeout=30)
    device = os.path.realpath(node.link(volume_id))
    # Only a client naming the attachment's secret export name is served.
    with sqlite3.connect(server.data_dir / "state.db") as db:
        port, name = db.execute("SELECT port, export_name FROM exports").fetchone()
    for guess in ("", volume_id, node.instance_id):
        refused = subprocess.run(
            ["nbdinfo", f"nbd://127.0.0.1:{port}/{guess}"], capture_output=True, check=False
        )
        assert refused.returncode != 0
    assert subprocess.run(["nbdinfo", "--size", f"nbd://127.0.0.1:{port}/{name}"],
                          capture_output=True, text=True, check=True).stdout.strip() == str(
        1024**3)  # fmt: skip
    block = os.urandom(4096)
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        os.pwrite(fd, _aligned(block), 0)
        os.fsync(fd)
        ec2.detach_volume(VolumeId=volume_id, Force=True)
        wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)
        assert not _processes(f"{server.data_dir}/exports")  # the export is closed

        def refused() -> bool:
            try:
                os.pwrite(fd, _aligned(bytes(4096)), 0)  # zeros: would erase `block`
                os.fsync(fd)
            except OSError:
                return True
            return False

        wait_for(refused, timeout=30, interval=0.5)
    finally:
        os.close(fd)
    image = server.data_dir / "volumes" / f"{volume_id}.img"
    with image.open("rb") as data:
        assert data.read(4096) == block  # the fenced node's writes reached nothing


@pytest.mark.parametrize("cluster", ["loopdev"], indirect=True)
def test_a_dead_node_keeps_its_attachment_until_terminated(
    cluster: tuple[Server, Node, Any], tmp_path: Path
) -> None:
    server, node, ec2 = cluster
    assert node.instance_id is not None
    volume_id = _new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=node.instance_id, Device="/dev/sdf")
    wait_for(lambda: _state(ec2, volume_id) == "attached", timeout=30)
    node.kill()
    time.sleep(1)
    assert _state(ec2, volume_id) == "attached"
    # A plain detach waits for the node, which is gone: stuck, as on EC2.
    ec2.detach_volume(VolumeId=volume_id)
    time.sleep(1)
    assert _state(ec2, volume_id) == "detaching"
    ec2.terminate_instances(InstanceIds=[node.instance_id])
    wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)
    wait_for(lambda: not _processes(f"{server.data_dir}/exports"), timeout=10)
    # The agent started again finds its dead devices, releases them, and says why it
    # cannot run for a terminated instance.
    again = subprocess.run(
        [sys.executable, "-m", "fakestor", "node", "--endpoint", server.url,
         "--instance-id", node.instance_id, "--data-dir", str(node.data_dir),
         "--dev-root", str(node.dev_root)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 1
    assert "not in a state from which it can run a node" in again.stderr
    assert not node.link(volume_id).exists()


@pytest.mark.parametrize("cluster", ["loopdev"], indirect=True)
def test_exports_survive_a_server_crash(cluster: tuple[Server, Node, Any], tmp_path: Path) -> None:
    server, node, ec2 = cluster
    assert node.instance_id is not None
    volume_id = _new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=node.instance_id, Device="/dev/sdf")
    wait_for(lambda: _state(ec2, volume_id) == "attached", timeout=30)
    link = node.link(volume_id)
    device = os.path.realpath(link)
    server.kill()
    server.start()
    data = os.urandom(4096)
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        os.pwrite(fd, _aligned(data), 4096)  # through the export reopened after the crash
        os.fsync(fd)
    finally:
        os.close(fd)
    with (server.data_dir / "volumes" / f"{volume_id}.img").open("rb") as image:
        image.seek(4096)
        assert image.read(4096) == data
    assert os.path.realpath(link) == device
    ec2.detach_volume(VolumeId=volume_id)
    wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)


@pytest.mark.parametrize("cluster", ["loopdev"], indirect=True)
def test_the_node_serves_its_instance_metadata(
    cluster: tuple[Server, Node, Any], tmp_path: Path
) -> None:
    _, node, ec2 = cluster
    node.stop()
    node.start("--imds-listen", "127.0.0.1:0")
    volume_id = _new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=node.instance_id, Device="/dev/sdf")
    wait_for(lambda: _state(ec2, volume_id) == "attached", timeout=30)
    # Port 0 picks a free port; find it from the agent's socket.
    port = _listening_port(node)
    base = f"http://127.0.0.1:{port}/latest"
    with urllib.request.urlopen(f"{base}/meta-data/instance-id") as answer:
        assert answer.read().decode() == node.instance_id
    token_request = urllib.request.Request(
        f"{base}/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    with urllib.request.urlopen(token_request) as answer:
        token = answer.read().decode()
    document = urllib.request.Request(
        f"{base}/dynamic/instance-identity/document",
        headers={"X-aws-ec2-metadata-token": token},
    )
    with urllib.request.urlopen(document) as answer:
        assert json.load(answer)["instanceId"] == node.instance_id
    with urllib.request.urlopen(f"{base}/meta-data/block-device-mapping/ebs1") as answer:
        assert answer.read().decode() == "sdf"
    ec2.detach_volume(VolumeId=volume_id)
    wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)


def _listening_port(node: Node) -> int:
    assert node.process is not None
    inodes = set()
    for fd in Path(f"/proc/{node.process.pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            return int(fields[1].split(":")[1], 16)
    raise AssertionError("the agent listens nowhere")


@pytest.mark.parametrize("cluster", ["loopdev"], indirect=True)
def test_a_launched_instance_gets_devices_for_its_mappings_once_its_agent_runs(
    cluster: tuple[Server, Node, Any], tmp_path: Path
) -> None:
    server, _, ec2 = cluster
    launched = ec2.run_instances(
        ImageId="ami-00000000000f4e570",  # the built-in EBS image: an 8 GiB root at /dev/xvda
        MinCount=1,
        MaxCount=1,
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}}],
    )["Instances"][0]
    instance_id = launched["InstanceId"]
    ec2.get_waiter("instance_running").wait(
        InstanceIds=[instance_id], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    mappings = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "BlockDeviceMappings"
    ]
    volumes = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in mappings}
    assert set(volumes) == {"/dev/xvda", "/dev/sdf"}
    second = Node(server, tmp_path / "second", instance_id)
    (tmp_path / "second").mkdir()
    try:
        second.start()
        for device_name, volume_id in volumes.items():
            link = second.link(volume_id)
            wait_for(link.exists, timeout=30)
            alias = second.dev_root / "fakestor" / device_name.removeprefix("/dev/")
            assert os.readlink(alias) == os.readlink(link)
        sizes = {v: loop.size_bytes(os.path.realpath(second.link(v))) for v in volumes.values()}
        assert sizes == {volumes["/dev/xvda"]: 8 * 1024**3, volumes["/dev/sdf"]: 2 * 1024**3}
        # Stopped, the instance has no devices; started again, it has them back.
        ec2.stop_instances(InstanceIds=[instance_id])
        ec2.get_waiter("instance_stopped").wait(
            InstanceIds=[instance_id], WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
        )
        wait_for(lambda: not any(second.link(v).exists() for v in volumes.values()), timeout=30)
        assert all(_state(ec2, v) == "attached" for v in volumes.values())
        ec2.start_instances(InstanceIds=[instance_id])
        wait_for(lambda: all(second.link(v).exists() for v in volumes.values()), timeout=30)
        ec2.terminate_instances(InstanceIds=[instance_id])
        wait_for(lambda: not any(second.link(v).exists() for v in volumes.values()), timeout=30)
    finally:
        second.stop()


@pytest.mark.parametrize("cluster", ["loopdev"], indirect=True)
def test_a_multi_attach_volume_has_one_export_per_node(
    cluster: tuple[Server, Node, Any], tmp_path: Path
) -> None:
    server, node, ec2 = cluster
    volume_id = ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=4, VolumeType="io2", Iops=100, MultiAttachEnabled=True
    )["VolumeId"]
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"]
             == "available")  # fmt: skip
    (tmp_path / "second").mkdir()
    second = Node(server, tmp_path / "second", None)
    try:
        second.start()
        for instance_id in (node.instance_id, second.instance_id):
            ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")

        def both_attached() -> bool:
            found = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
            return len(found) == 2 and all(a["State"] == "attached" for a in found)

        wait_for(both_attached, timeout=30)
        assert len(_processes(f"{server.data_dir}/exports")) == 2
        first_device = os.path.realpath(node.link(volume_id))
        second_device = os.path.realpath(second.link(volume_id))
        data = os.urandom(4096)
        fd = os.open(first_device, os.O_RDWR | os.O_DIRECT)
        try:
            os.pwrite(fd, _aligned(data), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(second_device, os.O_RDONLY | os.O_DIRECT)
        try:
            buffer = _aligned(bytes(4096))
            os.preadv(fd, [buffer], 0)
            assert bytes(buffer) == data  # the same data, through the other node's export
        finally:
            os.close(fd)
        for instance_id in (node.instance_id, second.instance_id):
            ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)
        wait_for(lambda: not ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0][
            "Attachments"], timeout=30)  # fmt: skip
        assert not _processes(f"{server.data_dir}/exports")
    finally:
        second.stop()


def test_a_node_in_its_own_network_namespace(start_server: ServerFactory, tmp_path: Path) -> None:
    """As on a separate machine: the agent reaches the server over a veth pair, its export
    listens on the server's address there, and its metadata is at 169.254.169.254."""
    _require("loopdev")
    require(shutil.which("ip") is not None, "needs ip (apt-get install iproute2)")
    name, outside, inside = f"fsn{os.getpid()}", f"fsh{os.getpid()}", f"fsv{os.getpid()}"
    server_address, node_address = "10.231.77.1", "10.231.77.2"
    subprocess.run(["ip", "netns", "add", name], check=True)
    node: Node | None = None
    try:
        for command in (
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
            ["ip", "link", "set", inside, "netns", name],
            ["ip", "addr", "add", f"{server_address}/30", "dev", outside],
            ["ip", "link", "set", outside, "up"],
            ["ip", "-n", name, "addr", "add", f"{node_address}/30", "dev", inside],
            ["ip", "-n", name, "link", "set", inside, "up"],
            ["ip", "-n", name, "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True)
        # Off loopback the server verifies signatures: the agent signs with these.
        (tmp_path / "credentials").write_text("AKIDNODETEST node-test-secret\n")
        server = start_server(
            "--listen", f"{server_address}:0", "--credentials", str(tmp_path / "credentials"),
            backend="loopdev", data_dir=tmp_path / "data",
        )  # fmt: skip
        endpoint = f"http://{server_address}:{server.port}"
        ec2 = boto3.client(
            "ec2", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="AKIDNODETEST", aws_secret_access_key="node-test-secret",
        )  # fmt: skip
        unsigned = urllib.request.Request(
            f"{endpoint}/node/v1/instances/{server.host_instance_id}/register", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned)
        assert b"AuthFailure" in refused.value.read()
        node = Node(
            server, tmp_path, None, endpoint=endpoint, prefix=("ip", "netns", "exec", name),
            env={"AWS_ACCESS_KEY_ID": "AKIDNODETEST",
                 "AWS_SECRET_ACCESS_KEY": "node-test-secret"},
        )  # fmt: skip
        node.start("--imds-listen", "169.254.169.254")
        volume_id = _new_volume(ec2)
        ec2.attach_volume(VolumeId=volume_id, InstanceId=node.instance_id, Device="/dev/sdf")
        wait_for(lambda: _state(ec2, volume_id) == "attached", timeout=30)
        assert Path(os.path.realpath(node.link(volume_id))).is_block_device()
        (export,) = _processes(f"{server.data_dir}/exports")
        command = Path(f"/proc/{export}/cmdline").read_bytes().split(b"\0")
        assert command[command.index(b"--ipaddr") + 1] == server_address.encode()
        read = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c",
             "import urllib.request; print(urllib.request.urlopen('http://169.254.169.254"
             "/latest/meta-data/block-device-mapping/ebs1').read().decode())"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert read.stdout.strip() == "sdf"
        ec2.detach_volume(VolumeId=volume_id)
        wait_for(lambda: _state(ec2, volume_id) == "detached", timeout=30)
    finally:
        if node is not None:
            node.stop()
        subprocess.run(["ip", "netns", "del", name], check=False)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
        _force_clean(tmp_path)
    assert not _processes(str(tmp_path))
