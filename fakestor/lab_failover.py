"""`fakestor lab failover`: a volume that moves between nodes, on a local cluster, for real.

The lab brings up a 3-node cluster of its own (devenv/cluster's), and walks through what
EBS and Docker each do when a service's task moves: a drain, a node lost without warning
(then its instance terminated), and two nodes racing for one volume. Each step prints the
commands it runs and what EBS (DescribeVolumes) and Docker (service ps) say, checks that
they did what the step teaches, and the lab takes the cluster down at the end, leaving the
machine as it was.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakestor.cluster import ClusterError
from fakestor.cluster.lifecycle import Settings, down, exec_argv, kill, status_lines, up
from fakestor.cluster.swarm import running_task_node, wait_task_elsewhere

DRIVER = "fakestor/ebs"
IMAGE = "fakestor/busybox:latest"
SERVICE = "lab-db"
VOLUME = "lab-data"


class LabFailure(Exception):
    """EBS or Docker did not do what the step says; the message says what happened."""


class FailoverLab:
    def __init__(self, root: Path, out: Callable[[str], None]) -> None:
        self.root = root
        self.out = out
        self.instances: dict[int, str] = {}
        self.prefix = os.environ.get("FAKESTOR_CLUSTER_PREFIX", "fsc")

    # ---- commands ---------------------------------------------------------------------
    def on(self, node: int, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.out(f"  node{node}$ {shlex.join(command)}")
        argv, env = exec_argv(self.root, node, command)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        for line in (result.stdout + result.stderr).strip().splitlines()[:8]:
            self.out(f"    {line}")
        if check and result.returncode != 0:
            raise LabFailure(f"{shlex.join(command)} failed on node {node}")
        return result

    def quiet(self, node: int, *command: str) -> subprocess.CompletedProcess[str]:
        argv, env = exec_argv(self.root, node, command)
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    def ebs(self) -> Any:
        import boto3

        _, env = exec_argv(self.root, 1, ["true"])
        return boto3.client(
            "ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def show_ebs(self) -> list[dict[str, Any]]:
        volume = self.ebs().describe_volumes(Filters=[{"Name": "tag:Name", "Values": [VOLUME]}])[
            "Volumes"
        ][0]
        names = {instance: f"node{node}" for node, instance in self.instances.items()}
        attachments = volume["Attachments"]
        where = ", ".join(
            f"{a['State']} to {a['InstanceId']} ({names.get(a['InstanceId'], '?')})"
            for a in attachments
        )
        self.out(f"  EBS: {volume['VolumeId']} is {volume['State']}; {where or 'no attachment'}")
        return list(attachments)

    def task_node(self) -> int | None:
        return running_task_node(self.root, SERVICE)

    def wait_moved(self, away_from: int, timeout: float = 240) -> int:
        try:
            return wait_task_elsewhere(self.root, SERVICE, away_from, timeout, interval=1)
        except TimeoutError:
            raise LabFailure(f"the task did not start on another node in {timeout:.0f} s") from None

    def data_on(self, node: int) -> str:
        container = self.quiet(
            node, "docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={SERVICE}"
        ).stdout.split()[0]
        return self.on(node, "docker", "exec", container, "cat", "/data/log").stdout

    # ---- steps -------------------------------------------------------------------------
    def step_service(self) -> int:
        self.out(
            "A service with one task and an EBS volume, as a database would run. The plugin on\n"
            "the task's node attaches the volume to that node's instance (AttachVolume), the\n"
            "node's agent makes the block device appear (over NBD), the plugin formats and\n"
            "mounts it, and Docker binds it into the container."
        )
        self.on(1, "docker", "volume", "create", "-d", DRIVER, "-o", "size=1", VOLUME)
        self.on(
            1, "docker", "service", "create", "--detach", "--name", SERVICE,
            "--endpoint-mode", "dnsrr", "--restart-delay", "2s",
            "--hostname", "{{.Node.Hostname}}",  # the task's hostname: its node's
            "--mount", f"type=volume,source={VOLUME},target=/data,volume-driver={DRIVER}",
            IMAGE, "sh", "-c", "hostname >> /data/log; sleep 100000",
        )  # fmt: skip
        first = self.wait_moved(away_from=0)
        self.out(f"  Docker: the task runs on node{first}")
        attachments = self.show_ebs()
        if [a["InstanceId"] for a in attachments] != [self.instances[first]]:
            raise LabFailure(f"the volume is not attached to node{first}'s instance")
        return first

    def step_drain(self, node: int) -> int:
        self.out(
            f"Drain node{node}: Swarm stops the task there; the plugin unmounts the volume\n"
            "and detaches it (DetachVolume; the agent flushes and removes the device). The\n"
            "task is started on another node, whose plugin attaches the volume to its own\n"
            "instance. Until the detach ends, that attach is refused (the volume is in use)\n"
            "and Swarm retries the task: the same dance as REX-Ray or the CSI driver on EC2."
        )
        started = time.monotonic()
        self.on(
            1, "docker", "node", "update", "--availability", "drain", f"{self.prefix}-node{node}"
        )
        moved = self.wait_moved(away_from=node)
        self.out(f"  Docker: the task runs on node{moved} after {time.monotonic() - started:.1f} s")
        self.show_ebs()
        log = self.data_on(moved)
        if f"{self.prefix}-node{node}" not in log:
            raise LabFailure("the data written on the first node is not on the new one")
        self.out("  The log the task wrote on the first node is there: the data moved with it.")
        self.on(
            1, "docker", "node", "update", "--availability", "active", f"{self.prefix}-node{node}"
        )
        return moved

    def step_lose_node(self, node: int) -> None:
        self.out(
            f"Lose node{node} without warning (every process of it killed): nothing detaches\n"
            "the volume. EC2 keeps the attachment of an instance that stopped answering, so\n"
            "the task cannot start elsewhere: the volume is still attached to the dead node.\n"
            "Stopping or terminating the instance (or a forced detach) releases it, and\n"
            "fakestor closes the node's NBD export: the dead node could write nothing more."
        )
        kill(self.root, node)
        self.out(f"  (every process in node{node}'s namespaces was sent SIGKILL)")
        time.sleep(5)
        attachments = self.show_ebs()
        if [a["InstanceId"] for a in attachments] != [self.instances[node]]:
            raise LabFailure("the attachment did not stay with the lost node")
        self.out(f"  $ aws ec2 terminate-instances --instance-ids {self.instances[node]}")
        self.ebs().terminate_instances(InstanceIds=[self.instances[node]])
        survivor = self.wait_moved(away_from=node)
        self.out(f"  Docker: the task runs on node{survivor}")
        self.show_ebs()
        if self.data_on(survivor).count("\n") < 2:
            raise LabFailure("the task on the surviving node does not see the earlier data")
        self.out("  Both earlier starts are in the log: no data was lost.")


def run_failover_lab(plugin_build: Path | None, out: Callable[[str], None] = print) -> int:
    """Bring up a cluster, run the steps, take it down; returns the number of failures."""
    if os.geteuid() != 0:
        raise LabFailure("the lab builds namespaces and a swarm: run it as root")
    if shutil.which("dockerd") is None:
        raise LabFailure("the lab needs dockerd (apt-get install docker.io)")
    root = Path(tempfile.mkdtemp(prefix="fakestor-failover-"))
    settings = Settings(
        root=root / "cluster",
        prefix=os.environ.get("FAKESTOR_CLUSTER_PREFIX", "fsc"),
        subnet=os.environ.get("FAKESTOR_CLUSTER_SUBNET", "10.231.0"),
        port=int(os.environ.get("FAKESTOR_CLUSTER_PORT", "8774")),
        backend="loopdev",
        plugin_build=plugin_build,
        python=sys.executable,
    )
    failures = 0
    try:
        out("== bringing up a 3-node cluster (devenv/cluster up --nodes 3)")
        try:
            up(settings, 3, lambda line: out(f"  {line}"))
        except ClusterError as failure:
            raise LabFailure(str(failure)) from None
        lab = FailoverLab(settings.root, out)
        for line in status_lines(settings.root)[1:]:
            out(f"  {line}")
            name, instance_id = line.split()[:2]
            lab.instances[int(name.removeprefix("node"))] = instance_id
        steps: list[tuple[str, Callable[[], Any]]] = []
        state: dict[str, int] = {}
        steps.append(("a service with an EBS volume", lambda: state.update(at=lab.step_service())))
        steps.append(
            ("drain the node it runs on", lambda: state.update(at=lab.step_drain(state["at"])))
        )
        steps.append(("lose a node without warning", lambda: lab.step_lose_node(state["at"])))
        for number, (title, step) in enumerate(steps, start=1):
            out(f"\n== step {number}: {title}")
            try:
                step()
            except LabFailure as failure:
                failures += 1
                out(f"  FAILED: {failure}")
                break
    finally:
        out("\n== taking the cluster down (devenv/cluster down)")
        down(settings.root, lambda line: out(f"  {line}"))
        shutil.rmtree(root, ignore_errors=True)
    out("The cluster is gone: no namespace, bridge, dockerd, device or mount of it is left.")
    return failures
