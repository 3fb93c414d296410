"""Bringing a local cluster up and down, losing a node, and reporting on it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from fakestor.cluster import (
    DEV_MARKER,
    DOCKER,
    IMAGE,
    IMDS_ADDRESS,
    NODE_DEV_DIRS,
    PLUGIN,
    Cluster,
    ClusterError,
    Node,
    alive,
    busybox_tar,
    loop_devices_under,
    processes_in_netns,
    run,
    spawn,
    stop,
    wait_for_line,
)
from fakestor.mounts import mount_table


# ---- up ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    root: Path
    prefix: str
    subnet: str
    port: int
    backend: str
    plugin_build: Path | None  # devenv/plugin/build; None: no managed plugin
    python: str


def up(settings: Settings, nodes: int, say: Callable[[str], None]) -> Cluster:
    """Bring up a cluster of NODES nodes; on failure, take down what was made and raise."""
    if nodes < 1 or nodes > 50:
        raise ClusterError(f"--nodes must be 1 to 50, not {nodes}")
    existing = Cluster.load(settings.root)
    if existing is not None:
        raise ClusterError(
            f"a cluster is recorded in {settings.root}; take it down first (devenv/cluster down)"
        )
    for command in ("ip", "nsenter", "unshare", "dockerd", "nbdkit", "nbdfuse", "losetup"):
        if shutil.which(command) is None:
            raise ClusterError(f"{command} is not installed; devenv/cluster installs it as root")
    settings.root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(
        root=settings.root, prefix=settings.prefix, subnet=settings.subnet, port=settings.port,
        access_key="AKIA" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
        nodes=[Node(number, f"{settings.subnet}.{10 + number}") for number in range(1, nodes + 1)],
    )  # fmt: skip
    cluster.save()
    try:
        _make_fabric(cluster, say)
        _start_server(cluster, settings, say)
        for node in cluster.nodes:
            _make_namespaces(cluster, node, say)
        # The nodes' daemons start side by side: each waits mostly on its dockerd and agent.
        _on_each(cluster.nodes, lambda node: _start_daemons(cluster, node, settings, say))
        if settings.plugin_build is not None:
            # One node at a time: enabling the plugin on several dockerds at once lost a
            # dockerd's connection midway in CI.
            for node in cluster.nodes:
                _install_plugin(cluster, node, settings, say)
        _join_swarm(cluster, say)
    except BaseException:
        say("up failed; taking down what it made")
        down(settings.root, say)
        raise
    return cluster


def _make_fabric(cluster: Cluster, say: Callable[[str], None]) -> None:
    say(f"bridge {cluster.bridge} with {cluster.gateway}/24")
    if run(["ip", "link", "show", cluster.bridge], check=False).returncode == 0:
        raise ClusterError(f"a link named {cluster.bridge} exists; choose another prefix")
    run(["ip", "link", "add", cluster.bridge, "type", "bridge"])
    cluster.bridge_made = True
    cluster.save()
    run(["ip", "addr", "add", f"{cluster.gateway}/24", "dev", cluster.bridge])
    run(["ip", "link", "set", cluster.bridge, "up"])
    # Namespace files must sit on a private mount to be bind-mounted there.
    cluster.ns_dir.mkdir(exist_ok=True)
    run(["mount", "--bind", str(cluster.ns_dir), str(cluster.ns_dir)])
    run(["mount", "--make-private", str(cluster.ns_dir)])
    for directory in NODE_DEV_DIRS:
        for level in reversed([directory, *directory.parents]):
            if not level.exists():
                level.mkdir()
                cluster.made_dirs.append(str(level))
        (directory / DEV_MARKER).touch()
    cluster.save()
    credentials = cluster.root / "credentials"
    credentials.write_text(f"{cluster.access_key} {cluster.secret_key}\n")
    credentials.chmod(0o600)


def _start_server(cluster: Cluster, settings: Settings, say: Callable[[str], None]) -> None:
    say(f"fakestor server on {cluster.endpoint} (backend {settings.backend})")
    log = cluster.root / "server.log"
    command = [
        settings.python, "-m", "fakestor", "server",
        "--listen", f"{cluster.gateway}:{cluster.port}",
        "--data-dir", str(cluster.root / "server"),
        "--backend", settings.backend,
        "--credentials", str(cluster.root / "credentials"),
    ]  # fmt: skip
    cluster.server_pid = spawn(command, log)
    cluster.save()
    wait_for_line(log, r"serving EC2", cluster.server_pid, "the fakestor server", 60)


def _on_each(nodes: Sequence[Node], work: Callable[[Node], None]) -> None:
    """WORK for every node at once; once all have ended, the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = [pool.submit(work, node) for node in nodes]
        wait(futures)
    for future in futures:
        future.result()


def _make_namespaces(cluster: Cluster, node: Node, say: Callable[[str], None]) -> None:
    netns, directory = cluster.netns(node), cluster.node_dir(node)
    say(f"node {node.number}: namespace {netns}, {node.address}")
    directory.mkdir(exist_ok=True)
    veth = f"{cluster.prefix}-v{node.number}"
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", cluster.bridge, "up"])
    inside = ["ip", "netns", "exec", netns]
    run([*inside, "ip", "addr", "add", f"{node.address}/24", "dev", "eth0"])
    run([*inside, "ip", "link", "set", "eth0", "up"])
    run([*inside, "ip", "link", "set", "lo", "up"])
    run([*inside, "ip", "addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo"])
    mount_ns = cluster.ns_dir / f"node{node.number}.mnt"
    uts_ns = cluster.ns_dir / f"node{node.number}.uts"
    mount_ns.touch()
    uts_ns.touch()
    dev_mounts = " && ".join(
        f"mount -t tmpfs -o mode=755,size=1m fakestor-node{node.number} {path}"
        for path in NODE_DEV_DIRS
    )
    run([
        "unshare", f"--mount={mount_ns}", f"--uts={uts_ns}", "--propagation", "private",
        "sh", "-c", f"hostname {netns} && {dev_mounts}",
    ])  # fmt: skip


def _start_daemons(
    cluster: Cluster, node: Node, settings: Settings, say: Callable[[str], None]
) -> None:
    directory = cluster.node_dir(node)
    say(f"node {node.number}: dockerd")
    docker_dir = directory / "docker"
    node.dockerd_pid = spawn(
        [
            *cluster.enter(node), "dockerd",
            "--data-root", str(docker_dir / "data"), "--exec-root", str(docker_dir / "exec"),
            "--pidfile", str(docker_dir / "dockerd.pid"), "--host", cluster.docker_host(node),
            "--iptables=false", "--ip-masq=false", "--bridge=none",
        ],
        directory / "dockerd.log",
    )  # fmt: skip
    cluster.save()

    say(f"node {node.number}: fakestor node agent")
    agent_log = directory / "agent.log"
    node.agent_pid = spawn(
        [
            *cluster.enter(node), settings.python, "-m", "fakestor", "node",
            "--endpoint", cluster.endpoint, "--data-dir", str(directory / "agent"),
            "--imds-listen", f"{IMDS_ADDRESS}:80",
        ],
        agent_log,
        env=cluster.client_env(),
    )  # fmt: skip
    cluster.save()
    ready = wait_for_line(
        agent_log, r"fakestor node ready: instance (i-[0-9a-f]+)", node.agent_pid,
        f"node {node.number}'s agent", 60,
    )  # fmt: skip
    node.instance_id = ready.group(1)
    cluster.save()

    deadline = time.monotonic() + 120
    while docker(cluster, node, "version", check=False).returncode != 0:
        if not alive(node.dockerd_pid) or time.monotonic() > deadline:
            raise ClusterError(f"node {node.number}'s dockerd did not start (log {directory})")
        time.sleep(0.3)
    tar = directory / "busybox.tar"
    busybox_tar(tar)
    docker(cluster, node, "import", str(tar), IMAGE)
    tar.unlink()


def _install_plugin(
    cluster: Cluster, node: Node, settings: Settings, say: Callable[[str], None]
) -> None:
    assert settings.plugin_build is not None
    say(f"node {node.number}: managed plugin {PLUGIN}")
    run([str(settings.plugin_build), PLUGIN], env={"DOCKER_HOST": cluster.docker_host(node)},
        timeout=900)  # fmt: skip
    docker(
        cluster, node, "plugin", "set", PLUGIN,
        f"FAKESTOR_ENDPOINT={cluster.endpoint}",
        f"FAKESTOR_IMDS_ENDPOINT=http://{IMDS_ADDRESS}/",
        f"AWS_ACCESS_KEY_ID={cluster.access_key}",
        f"AWS_SECRET_ACCESS_KEY={cluster.secret_key}",
    )  # fmt: skip
    docker(cluster, node, "plugin", "enable", "--timeout", "120", PLUGIN)


def _join_swarm(cluster: Cluster, say: Callable[[str], None]) -> None:
    first = cluster.nodes[0]
    say(f"swarm: node 1 initialises it, {len(cluster.nodes) - 1} join as managers")
    docker(cluster, first, "swarm", "init", "--advertise-addr", first.address,
           "--listen-addr", f"{first.address}:2377")  # fmt: skip
    token = docker(cluster, first, "swarm", "join-token", "-q", "manager").stdout.strip()
    for node in cluster.nodes[1:]:
        docker(cluster, node, "swarm", "join", "--token", token,
               "--advertise-addr", node.address, "--listen-addr", f"{node.address}:2377",
               f"{first.address}:2377")  # fmt: skip


def docker(
    cluster: Cluster, node: Node, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return run([DOCKER, "--host", cluster.docker_host(node), *args], check=check, timeout=timeout)


# ---- down, kill, status ---------------------------------------------------------------------
def down(root: Path, say: Callable[[str], None]) -> None:
    """Take down the cluster recorded in ROOT and everything it made; idempotent."""
    cluster = Cluster.load(root)
    if cluster is None:
        say(f"no cluster is recorded in {root}")
        return
    for node in cluster.nodes:
        if alive(node.dockerd_pid):
            _empty_dockerd(cluster, node)
    for node in cluster.nodes:
        say(f"node {node.number}: stopping")
        stop(node.dockerd_pid, timeout=60)
        stop(node.agent_pid, timeout=60)
        _kill_netns(cluster.netns(node))
    # A node's devices are loop devices on its nbdfuse files: found by the FUSE mounts of
    # the node's mount namespace, even if the node was lost (its processes are gone).
    fuse_devices = set()
    for ns_file in sorted(cluster.ns_dir.glob("node*.mnt")) if cluster.ns_dir.is_dir() else []:
        table = run(["nsenter", f"--mount={ns_file}", "cat", "/proc/self/mountinfo"], check=False)
        for line in table.stdout.splitlines():
            fields = line.split(" - ", 1)
            if len(fields) == 2 and fields[1].startswith("fuse"):
                fuse_devices.add(fields[0].split()[2])
    for ns_file in sorted(cluster.ns_dir.glob("node*")) if cluster.ns_dir.is_dir() else []:
        run(["umount", str(ns_file)], check=False)
    listed = run(
        ["losetup", "--list", "--noheadings", "-O", "NAME,BACK-MAJ:MIN,BACK-FILE"], check=False
    )
    for line in listed.stdout.splitlines():
        name, *rest = line.split()
        # On a lost node nbdfuse is dead: its file cannot be reached, so no device number.
        dead = rest == ["/nbd"]
        if (rest and rest[0] in fuse_devices) or dead:
            run(["losetup", "--detach", name], check=False)
    for device in loop_devices_under(root):
        run(["losetup", "--detach", device], check=False)
    for mount in reversed(mount_table()):
        if mount.target == str(root) or mount.target.startswith(str(root) + "/"):
            run(["umount", "-l", mount.target], check=False)
    for node in cluster.nodes:
        run(["ip", "netns", "delete", cluster.netns(node)], check=False)
    say("stopping the fakestor server")
    stop(cluster.server_pid, timeout=60)
    if cluster.bridge_made:
        run(["ip", "link", "delete", cluster.bridge], check=False)
    for directory in NODE_DEV_DIRS:
        (directory / DEV_MARKER).unlink(missing_ok=True)
    for made in reversed(cluster.made_dirs):
        with contextlib.suppress(OSError):
            Path(made).rmdir()
    shutil.rmtree(root, ignore_errors=True)
    say("the cluster is down")


def _empty_dockerd(cluster: Cluster, node: Node) -> None:
    """Services, containers and the swarm go before dockerd stops, so nothing holds volumes."""
    if docker(cluster, node, "info", check=False, timeout=20).returncode != 0:
        return
    services = docker(cluster, node, "service", "ls", "-q", check=False, timeout=30).stdout.split()
    if services:
        docker(cluster, node, "service", "rm", *services, check=False, timeout=60)
    containers = docker(cluster, node, "ps", "-aq", check=False, timeout=30).stdout.split()
    if containers:
        docker(cluster, node, "rm", "-f", *containers, check=False, timeout=120)


def _kill_netns(netns: str) -> None:
    """End every process left in a node's network namespace: all were started by the node."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_in_netns(netns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)


def kill(root: Path, number: int) -> None:
    """A node lost without warning: every process in it killed at once (SIGKILL)."""
    cluster = _required(root)
    node = cluster.node(number)
    pids = processes_in_netns(cluster.netns(node))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def status_lines(root: Path) -> list[str]:
    """The endpoint, then a line per node: number, instance id, address, swarm role."""
    cluster = _required(root)
    roles: dict[str, str] = {}
    for node in cluster.nodes:
        listing = docker(
            cluster, node, "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}} {{.Status}}",
            check=False, timeout=20,
        )  # fmt: skip
        if listing.returncode == 0:
            for line in listing.stdout.splitlines():
                hostname, *rest = line.split()
                status = rest[-1].lower() if rest else "unknown"
                manager = rest[0].lower() if len(rest) > 1 else "worker"
                roles[hostname] = f"{manager} {status}"
            break
    lines = [cluster.endpoint]
    for node in cluster.nodes:
        state = "up" if alive(node.dockerd_pid) else "down"
        role = roles.get(cluster.netns(node), "unknown")
        lines.append(
            f"node{node.number} {node.instance_id or '-'} {node.address} {role} (dockerd {state})"
        )
    return lines


def exec_argv(root: Path, number: int, command: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run COMMAND on node NUMBER, in its namespaces."""
    cluster = _required(root)
    node = cluster.node(number)
    if not command:
        raise ClusterError("exec needs a command to run on the node")
    return [*cluster.enter(node), *command], {**os.environ, **cluster.client_env(node)}


def _required(root: Path) -> Cluster:
    cluster = Cluster.load(root)
    if cluster is None:
        raise ClusterError(f"no cluster is recorded in {root}; start one with devenv/cluster up")
    return cluster
