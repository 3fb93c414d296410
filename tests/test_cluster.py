"""A 3-node local cluster (devenv/cluster): volumes that move between nodes over NBD, under
Docker Swarm, with real devices on each node and nothing left behind by `down`.

One cluster serves the whole module (bringing it up costs a few seconds, its managed plugin
a build the first time). Each test leaves the cluster as it found it: no services, no
containers, no volume attached.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from fakestor.cluster.swarm import running_task_node, task_container
from fakestor.device_names import by_id_path
from fakestor.mounts import mount_table
from tests.conftest import require, require_root_and_loop, wait_for
from tests.docker_env import require_docker

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent
DRIVER = "fakestor/ebs"
IMAGE = "fakestor/busybox:latest"
PREFIX = "fst"
SUBNET = "10.233.0"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalCluster:
    root: Path
    env: dict[str, str]
    endpoint: str = ""
    nodes: list[tuple[str, str]] | None = None  # (instance id, address) per node

    def cli(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "fakestor.cluster", "--root", str(self.root), *args],
            capture_output=True, text=True, timeout=timeout, env=self.env,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"cluster {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def on(
        self, node: int, *command: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """COMMAND on node NODE (1-based), in its namespaces."""
        return self.cli("exec", str(node), *command, check=check, timeout=timeout)

    def docker(
        self, node: int, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self.on(node, "docker", *args, check=check, timeout=timeout)

    def instance(self, node: int) -> str:
        assert self.nodes is not None
        return self.nodes[node - 1][0]

    def ec2(self) -> Any:
        credentials = dict(
            line.split("=", 1)
            for line in self.on(1, "sh", "-c", "env | grep ^AWS_").stdout.splitlines()
        )
        return boto3.client(
            "ec2", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip

    def node_of_task(self, service: str) -> int:
        """The node running SERVICE's one running task."""
        node = running_task_node(self.root, service)
        if node is None:
            raise AssertionError(f"no running task of {service}")
        return node


def _leftovers(root: Path) -> list[str]:
    found = []
    found += [f"mount {m.target}" for m in mount_table() if str(root) in m.target]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split()[0]}" for line in links.splitlines() if line.startswith(PREFIX)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(PREFIX)]
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        # A node's device is a loop device on nbdfuse's file, named /nbd in its namespace.
        if str(root) in backing.read_text() or backing.read_text().strip() == "/nbd":
            found.append(f"loop device {backing.parent.parent.name}")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in command:
            found.append(f"process {proc.name}: {command[:120]}")
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_root_and_loop()
    require_docker()
    for tool in ("nbdkit", "nbdfuse", "mmdebstrap", "nsenter", "ip"):
        require(shutil.which(tool) is not None, f"needs {tool} (devenv/test installs it)")
    root = tmp_path_factory.mktemp("cluster") / "c"
    env = {
        **os.environ,
        "FAKESTOR_CLUSTER_PREFIX": PREFIX,
        "FAKESTOR_CLUSTER_SUBNET": SUBNET,
        "FAKESTOR_CLUSTER_PORT": str(_free_port()),
        "FAKESTOR_PLUGIN_BUILD": str(ROOT / "devenv" / "plugin" / "build"),
        "FAKESTOR_VENV": sys.prefix,
    }
    local = LocalCluster(root, env)
    try:
        up = local.cli("up", "--nodes", "3")
        lines = up.stdout.splitlines()
        local.endpoint = lines[0]
        local.nodes = [(line.split()[1], line.split()[2]) for line in lines[1:]]
        yield local
    finally:
        down = local.cli("down", check=False)
        leftovers = _leftovers(root)
        assert down.returncode == 0, down.stderr
        assert not leftovers, leftovers
        assert not root.exists()


def _wait_attachment(
    ec2: Any, volume_id: str, instance_id: str | None, timeout: float = 60
) -> None:
    def settled() -> bool:
        attachments = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
        if instance_id is None:
            return not attachments
        return any(a["InstanceId"] == instance_id and a["State"] == "attached" for a in attachments)

    wait_for(settled, timeout=timeout, interval=0.3)


def test_status_names_the_endpoint_and_each_node(cluster: LocalCluster) -> None:
    lines = cluster.cli("status").stdout.splitlines()
    assert lines[0] == cluster.endpoint
    assert len(lines) == 4
    for number, line in enumerate(lines[1:], start=1):
        name, instance_id, address, role = line.split()[:4]
        assert name == f"node{number}"
        assert instance_id.startswith("i-")
        assert address == f"{SUBNET}.{10 + number}"
        assert role in ("leader", "reachable")
    # The node's own view: its instance id in the environment and in its instance metadata.
    assert cluster.on(2, "printenv", "FAKESTOR_INSTANCE_ID").stdout.strip() == cluster.instance(2)
    metadata = cluster.on(
        2, sys.executable, "-c",
        "import urllib.request as u; print(u.urlopen('http://169.254.169.254/latest/meta-data/instance-id').read().decode())",
    ).stdout.strip()  # fmt: skip
    assert metadata == cluster.instance(2)
    assert (
        cluster.docker(3, "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
        == "active"
    )


def test_a_volume_moves_from_node_1_to_node_2_with_its_data(cluster: LocalCluster) -> None:
    ec2 = cluster.ec2()
    volume_id = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    wait_for(
        lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available"
    )
    link = str(by_id_path(volume_id))
    try:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=cluster.instance(1), Device="/dev/sdf")
        _wait_attachment(ec2, volume_id, cluster.instance(1))
        # The device is on node 1, and only there.
        assert cluster.on(1, "test", "-b", link, check=False).returncode == 0
        assert cluster.on(2, "test", "-e", link, check=False).returncode != 0
        assert not Path(link).exists()
        cluster.on(
            1,
            "sh",
            "-c",
            f"""
            set -e; mkfs.ext4 -q {link}; mkdir -p /tmp/m1; mount {link} /tmp/m1
            echo written-on-node-1 > /tmp/m1/f; umount /tmp/m1; rmdir /tmp/m1""",
        )
        ec2.detach_volume(VolumeId=volume_id)
        _wait_attachment(ec2, volume_id, None)
        assert cluster.on(1, "test", "-e", link, check=False).returncode != 0

        ec2.attach_volume(VolumeId=volume_id, InstanceId=cluster.instance(2), Device="/dev/sdf")
        _wait_attachment(ec2, volume_id, cluster.instance(2))
        read = cluster.on(
            2,
            "sh",
            "-c",
            f"""
            set -e; mkdir -p /tmp/m2; mount {link} /tmp/m2; cat /tmp/m2/f; umount /tmp/m2
            rmdir /tmp/m2""",
        )
        assert read.stdout == "written-on-node-1\n"
    finally:
        ec2.detach_volume(VolumeId=volume_id, Force=True) if ec2.describe_volumes(
            VolumeIds=[volume_id])["Volumes"][0]["Attachments"] else None  # fmt: skip
        _wait_attachment(ec2, volume_id, None)
        ec2.delete_volume(VolumeId=volume_id)


def test_a_forced_detach_fences_the_node(cluster: LocalCluster) -> None:
    ec2 = cluster.ec2()
    volume_id = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    wait_for(
        lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available"
    )
    link = str(by_id_path(volume_id))
    try:
        ec2.attach_volume(VolumeId=volume_id, InstanceId=cluster.instance(3), Device="/dev/sdg")
        _wait_attachment(ec2, volume_id, cluster.instance(3))
        cluster.on(
            3, "sh", "-c", f"printf before | dd of={link} bs=512 conv=fsync,notrunc 2>/dev/null"
        )
        # Hold the device open on the node, as a mounted filesystem would, across the fence.
        device = cluster.on(3, "readlink", "-f", link).stdout.strip()
        ec2.detach_volume(VolumeId=volume_id, Force=True)
        _wait_attachment(ec2, volume_id, None)
        write = cluster.on(
            3, "sh", "-c",
            f"printf after! | dd of={device} bs=512 oflag=direct conv=fsync,notrunc",
            check=False,
        )  # fmt: skip
        assert write.returncode != 0, "a write after the fence succeeded"
        # The data is what it was before the fence: read it on another node.
        ec2.attach_volume(VolumeId=volume_id, InstanceId=cluster.instance(1), Device="/dev/sdg")
        _wait_attachment(ec2, volume_id, cluster.instance(1))
        head = cluster.on(1, "sh", "-c", f"dd if={link} bs=6 count=1 2>/dev/null").stdout
        assert head == "before"
    finally:
        if ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]:
            ec2.detach_volume(VolumeId=volume_id, Force=True)
        _wait_attachment(ec2, volume_id, None)
        ec2.delete_volume(VolumeId=volume_id)


def _service(cluster: LocalCluster, name: str, volume: str, command: str) -> None:
    cluster.docker(
        1, "service", "create", "--detach", "--name", name, "--endpoint-mode", "dnsrr",
        "--restart-delay", "2s", "--hostname", "{{.Node.Hostname}}",
        "--mount", f"type=volume,source={volume},target=/data,volume-driver={DRIVER}",
        IMAGE, "sh", "-c", command,
    )  # fmt: skip


def _remove_service(cluster: LocalCluster, name: str, volume: str) -> None:
    cluster.docker(1, "service", "rm", name, check=False)
    for node in (1, 2, 3):
        wait_for(
            lambda node=node: not cluster.docker(
                node, "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}",
                check=False,
            ).stdout.strip(),
            timeout=60,
        )  # fmt: skip
    for node in (1, 2, 3):
        cluster.docker(node, "volume", "rm", volume, check=False)


def test_drain_moves_the_task_and_its_volume(cluster: LocalCluster) -> None:
    service, volume = "drained", "drain-vol"
    cluster.docker(1, "volume", "create", "-d", DRIVER, "-o", "size=1", volume)
    _service(cluster, service, volume,
             "test -f /data/first || hostname > /data/first; sleep 100000")  # fmt: skip
    try:
        first = wait_for(lambda: _running_node(cluster, service), timeout=120, interval=1)
        first_host = cluster.on(first, "hostname").stdout.strip()
        started = time.monotonic()
        cluster.docker(1, "node", "update", "--availability", "drain", f"{PREFIX}-node{first}")
        second = wait_for(
            lambda: _moved_from(cluster, service, first), timeout=180, interval=1
        )  # fmt: skip
        moved_in = time.monotonic() - started
        container = _task_container(cluster, second, service)
        written = cluster.docker(second, "exec", container, "cat", "/data/first").stdout.strip()
        assert written == first_host, "the task on the new node does not see the data"
        print(f"drain to running with data on node {second}: {moved_in:.1f} s")
    finally:
        for node in (1, 2, 3):
            cluster.docker(1, "node", "update", "--availability", "active", f"{PREFIX}-node{node}",
                           check=False)  # fmt: skip
        _remove_service(cluster, service, volume)


def _moved_from(cluster: LocalCluster, service: str, old: int) -> int | None:
    node = _running_node(cluster, service)
    return node if node is not None and node != old else None


def _task_container(cluster: LocalCluster, node: int, service: str) -> str:
    container = task_container(cluster.root, node, service)
    assert container is not None, f"no task container of {service} on node {node}"
    return container


def _running_node(cluster: LocalCluster, service: str) -> int | None:
    return running_task_node(cluster.root, service)


def test_the_failover_benchmark_runs_on_this_cluster(cluster: LocalCluster) -> None:
    """`python -m benchmarks --quick --only failover` on this module's cluster: the benchmark's
    own 2-node cluster would cost a minute's up and down, which these tests and the failover
    lab already check; its drains, timing and table are what runs here."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record", "--only", "failover"],
        env={**cluster.env, "FAKESTOR_BENCH_CLUSTER_ROOT": str(cluster.root)},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| with a fakestor volume (running with its data) |" in result.stdout
    assert "| with no volume (Swarm's rescheduling alone) |" in result.stdout
    for node in (1, 2, 3):  # it leaves the cluster as it found it
        assert not cluster.docker(node, "ps", "-aq").stdout.strip()
        assert "bench" not in cluster.docker(node, "volume", "ls", "-q").stdout.split()
    assert not cluster.docker(1, "service", "ls", "-q").stdout.strip()


def test_two_nodes_racing_for_one_volume_one_wins(cluster: LocalCluster) -> None:
    volume = "raced"
    cluster.docker(1, "volume", "create", "-d", DRIVER, "-o", "size=1", volume)
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fakestor.cluster",
                "--root",
                str(cluster.root),
                "exec",
                str(node),
                "docker",
                "run",
                "-d",
                "--name",
                "racer",
                "--network",
                "none",
                "-v",
                f"{volume}:/data",
                IMAGE,
                "sh",
                "-c",
                f"echo {node} > /data/winner; sleep 1000",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cluster.env,
        )
        for node in (2, 3)
    ]
    try:
        results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]  # type: ignore[union-attr]
        winners = [node for node, (code, _) in zip((2, 3), results, strict=True) if code == 0]
        assert len(winners) == 1, results
        loser_error = next(err for code, err in results if code != 0)
        assert "attached to instance" in loser_error or "VolumeInUse" in loser_error, loser_error
        winner = winners[0]
        assert cluster.docker(winner, "exec", "racer", "cat", "/data/winner").stdout.strip() == str(
            winner
        )
    finally:
        for node in (2, 3):
            cluster.docker(node, "rm", "-f", "racer", check=False)
        for node in (1, 2, 3):
            cluster.docker(node, "volume", "rm", volume, check=False)


def test_client_error_for_a_node_that_does_not_exist(cluster: LocalCluster) -> None:
    result = cluster.cli("exec", "9", "true", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "devenv/cluster: there is no node 9; the cluster has 3"


def test_a_lost_node_keeps_the_volume_until_its_instance_is_terminated(
    cluster: LocalCluster,
) -> None:
    """Run last: it loses a node for good."""
    ec2 = cluster.ec2()
    service, volume = "survivor", "lost-vol"
    cluster.docker(1, "volume", "create", "-d", DRIVER, "-o", "size=1", volume)
    _service(
        cluster, service, volume, "test -f /data/first || hostname > /data/first; sleep 100000"
    )
    lost = wait_for(lambda: _running_node(cluster, service), timeout=120, interval=1)
    if lost == 1:  # node 1 is where this test talks to the swarm from: move the task off it
        cluster.docker(1, "node", "update", "--availability", "drain", f"{PREFIX}-node1")
        lost = wait_for(lambda: _moved_from(cluster, service, 1), timeout=180, interval=1)
        cluster.docker(1, "node", "update", "--availability", "active", f"{PREFIX}-node1")
    task = _task_container(cluster, lost, service)
    written = cluster.docker(lost, "exec", task, "cat", "/data/first").stdout.strip()
    volume_id = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [volume]}])["Volumes"][
        0
    ]["VolumeId"]
    try:
        cluster.cli("kill", str(lost))
        # EC2 keeps the attachment of an instance that stopped answering.
        time.sleep(5)
        attachments = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]
        assert [a["InstanceId"] for a in attachments] == [cluster.instance(lost)]
        ec2.terminate_instances(InstanceIds=[cluster.instance(lost)])
        _wait_attachment(ec2, volume_id, None, timeout=120)
        survivor = wait_for(lambda: _moved_from(cluster, service, lost), timeout=240, interval=1)
        container = _task_container(cluster, survivor, service)
        assert (
            cluster.docker(survivor, "exec", container, "cat", "/data/first").stdout.strip()
            == written
        )
    finally:
        _remove_service_live(cluster, service, volume, lost)


def _remove_service_live(cluster: LocalCluster, name: str, volume: str, lost: int) -> None:
    cluster.docker(1, "service", "rm", name, check=False)
    for node in (1, 2, 3):
        if node == lost:
            continue
        wait_for(
            lambda node=node: not cluster.docker(
                node, "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}",
                check=False,
            ).stdout.strip(),
            timeout=60,
        )  # fmt: skip
        cluster.docker(node, "volume", "rm", volume, check=False)
