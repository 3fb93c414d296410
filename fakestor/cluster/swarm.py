"""What Swarm says about a service's tasks on a local cluster: which node runs its task,
and its container there. For the tests, the failover lab and the failover benchmark."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from fakestor.cluster import Cluster, ClusterError
from fakestor.cluster.lifecycle import exec_argv


def docker_on(root: Path, node: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` on node NODE of the cluster at ROOT, against the node's own dockerd."""
    argv, env = exec_argv(root, node, ["docker", *args])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def running_task_node(root: Path, service: str) -> int | None:
    """The node running SERVICE's one task, as the managers (node 1) see it; None if none runs."""
    cluster = Cluster.load(root)
    if cluster is None:
        raise ClusterError(f"no cluster is recorded in {root}")
    listing = docker_on(
        root, 1, "service", "ps", service, "--filter", "desired-state=running",
        "--format", "{{.Node}} {{.CurrentState}}",
    ).stdout  # fmt: skip
    for line in listing.splitlines():
        hostname, state = line.split()[:2]
        if state == "Running":
            return int(hostname.removeprefix(f"{cluster.prefix}-node"))
    return None


def wait_task_elsewhere(
    root: Path, service: str, away_from: int | None, timeout: float = 300, interval: float = 0.5
) -> int:
    """The node SERVICE's task runs on once it runs on a node other than AWAY_FROM."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = running_task_node(root, service)
        if node is not None and node != away_from:
            return node
        time.sleep(interval)
    raise TimeoutError(
        f"the task of {service} did not start off node {away_from} in {timeout:.0f} s"
    )


def task_container(root: Path, node: int, service: str) -> str | None:
    """The id of SERVICE's task container on node NODE, if one is there."""
    listing = docker_on(
        root, node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"
    )
    found = listing.stdout.split()
    return found[0] if found else None
