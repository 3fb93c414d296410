"""Failover on a local cluster (devenv/cluster's): the time from `docker node update
--availability drain` of the node running a one-task service to that task running on the
other node, for a service with a fakestor volume (detach, attach over NBD, mount: its
data moves with it) and, side by side, the same service with no volume (what Swarm's own
rescheduling costs)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import scratch
from fakestor.cluster import Cluster
from fakestor.cluster.lifecycle import Settings, down, exec_argv, up
from fakestor.cluster.swarm import docker_on, task_container, wait_task_elsewhere

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "fakestor/busybox:latest"
DRIVER = "fakestor/ebs"
PREFIX = "fsb"


@dataclass
class Failovers:
    with_volume: list[float] = field(default_factory=list)
    without_volume: list[float] = field(default_factory=list)


def _docker(root: Path, node: int, *args: str) -> str:
    result = docker_on(root, node, *args)
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on node {node}: {result.stderr.strip()}")
    return result.stdout


def _has_data(root: Path, node: int, service: str, lines: int) -> bool:
    container = task_container(root, node, service)
    if container is None:
        return False
    argv, env = exec_argv(root, node, ["docker", "exec", container, "cat", "/data/log"])
    read = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    return read.returncode == 0 and read.stdout.count("\n") >= lines


def _drain_runs(root: Path, prefix: str, service: str, runs: int, volume: bool) -> list[float]:
    times = []
    at = wait_task_elsewhere(root, service, None, interval=0.1)
    for run in range(runs):
        started = time.monotonic()
        _docker(root, 1, "node", "update", "--availability", "drain", f"{prefix}-node{at}")
        moved = wait_task_elsewhere(root, service, at, interval=0.1)
        if volume:  # running is not enough: the data written before must be there
            while not _has_data(root, moved, service, run + 2):
                time.sleep(0.05)
        times.append(time.monotonic() - started)
        _docker(root, 1, "node", "update", "--availability", "active", f"{prefix}-node{at}")
        at = moved
    return times


def measure(work_dir: Path, quick: bool, runs: int) -> Failovers:
    """On a 2-node cluster of its own, or, with FAKESTOR_BENCH_CLUSTER_ROOT, on a cluster that
    is already up (the cluster tests' smoke run), which it leaves as it found it."""
    existing = os.environ.get("FAKESTOR_BENCH_CLUSTER_ROOT")
    if existing:
        return measure_on(Path(existing), runs)
    with scratch(work_dir, "fakestor-failover-") as base:
        settings = Settings(
            root=base / "cluster", prefix=PREFIX, subnet="10.235.0",
            port=int(os.environ.get("FAKESTOR_BENCH_CLUSTER_PORT", "8779")), backend="loopdev",
            plugin_build=ROOT / "devenv" / "plugin" / "build", python=sys.executable,
        )  # fmt: skip
        up(settings, 2, lambda line: print(f"  {line}", file=sys.stderr))
        try:
            return measure_on(settings.root, runs)
        finally:
            down(settings.root, lambda line: print(f"  {line}", file=sys.stderr))


def measure_on(root: Path, runs: int) -> Failovers:
    """Drain runs on the cluster recorded in ROOT; its services and volume are removed after."""
    cluster = Cluster.load(root)
    if cluster is None:
        raise RuntimeError(f"no cluster is recorded in {root}")
    prefix, nodes = cluster.prefix, [node.number for node in cluster.nodes]
    figures = Failovers()
    common = ["--endpoint-mode", "dnsrr", "--restart-delay", "1s",
              "--hostname", "{{.Node.Hostname}}"]  # fmt: skip
    try:
        _docker(root, 1, "volume", "create", "-d", DRIVER, "-o", "size=1", "bench")
        _docker(
            root, 1, "service", "create", "--detach", "--name", "with-volume", *common,
            "--mount", f"type=volume,source=bench,target=/data,volume-driver={DRIVER}",
            IMAGE, "sh", "-c", "hostname >> /data/log; sleep 100000",
        )  # fmt: skip
        figures.with_volume = _drain_runs(root, prefix, "with-volume", runs, volume=True)
        _remove_service(root, nodes, "with-volume")
        _docker(
            root, 1, "service", "create", "--detach", "--name", "no-volume", *common,
            IMAGE, "sh", "-c", "sleep 100000",
        )  # fmt: skip
        figures.without_volume = _drain_runs(root, prefix, "no-volume", runs, volume=False)
    finally:
        for node in nodes:  # a failed drain run may have left one drained
            docker_on(root, 1, "node", "update", "--availability", "active", f"{prefix}-node{node}")
        for service in ("with-volume", "no-volume"):
            _remove_service(root, nodes, service)
        for node in nodes:
            docker_on(root, node, "volume", "rm", "bench")
    return figures


def _remove_service(root: Path, nodes: list[int], service: str) -> None:
    """Remove SERVICE and wait until no node has a container of it (so its volume is free)."""
    docker_on(root, 1, "service", "rm", service)
    deadline = time.monotonic() + 120
    for node in nodes:
        while task_container(root, node, service) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the containers of {service} were not removed")
            time.sleep(0.2)


def summary(figures: Failovers) -> str:
    def row(name: str, times: list[float]) -> str:
        return (
            f"| {name} | {statistics.median(times):.1f} s | {min(times):.1f}-{max(times):.1f} s "
            f"| {len(times)} |"
        )

    moved = statistics.median(figures.with_volume)
    rescheduled = statistics.median(figures.without_volume)
    ratio, added = moved / rescheduled, moved - rescheduled
    return "\n".join(
        [
            "| service | drain to running on the other node | min-max | drains |",
            "|---|---|---|---|",
            row("with a fakestor volume (running with its data)", figures.with_volume),
            row("with no volume (Swarm's rescheduling alone)", figures.without_volume),
            "",
            f"The volume adds {added:.1f} s ({ratio:.2f}x) to Swarm's own rescheduling: "
            "the old node's plugin unmounting and detaching, the attach over NBD on the new "
            "node, and the mount. The rest is Swarm noticing the drain, stopping the task "
            "and scheduling it again.",
        ]
    )
