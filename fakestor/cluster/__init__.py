"""A local cluster: N fakestor nodes on one machine, joined in a Docker Swarm.

Each node is a network namespace on a bridge this module creates, with a private mount
namespace (its own /dev/disk/by-id and /dev/fakestor, so a node sees only its own EBS
devices) and its own UTS namespace (its own hostname). In it run a dockerd (own data-root,
exec-root and socket), the managed fakestor plugin, and `fakestor node`, the agent that
makes the node's attached volumes appear over NBD and serves its instance metadata at
169.254.169.254. The fakestor server runs on the host, on the bridge's address, and
verifies every request's signature with the key pair the cluster made.

Everything made is recorded in ROOT/cluster.json as it is made, so `down` undoes a
half-finished `up` too, and leaves the machine as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMAGE = "fakestor/busybox:latest"
PLUGIN = "fakestor/ebs:latest"
DRIVER = "fakestor/ebs"
IMDS_ADDRESS = "169.254.169.254"
BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "ls", "sleep", "dd", "sha256sum", "stat", "head", "mkdir", "touch",
    "true", "wc", "sync", "df", "mount", "grep", "hostname", "date", "rm", "cp",
)  # fmt: skip
# Directories of the host's /dev each node mounts a tmpfs over; the host keeps a marker in
# them while the cluster is up, so nothing removes them from under the nodes' mounts.
NODE_DEV_DIRS = (Path("/dev/disk/by-id"), Path("/dev/fakestor"))
DEV_MARKER = ".fakestor-cluster"
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


_SAVING = threading.Lock()


class ClusterError(Exception):
    """Something the cluster could not do; the message says what and why, in one line."""


@dataclass
class Node:
    number: int
    address: str
    instance_id: str = ""
    dockerd_pid: int = 0
    agent_pid: int = 0


@dataclass
class Cluster:
    """What `up` made, kept in ROOT/cluster.json."""

    root: Path
    prefix: str
    subnet: str
    port: int
    server_pid: int = 0
    access_key: str = ""
    secret_key: str = ""
    nodes: list[Node] = field(default_factory=list)
    made_dirs: list[str] = field(default_factory=list)
    bridge_made: bool = False

    # ---- names and paths -------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.gateway}:{self.port}"

    @property
    def ns_dir(self) -> Path:
        return self.root / "ns"

    def netns(self, node: Node) -> str:
        return f"{self.prefix}-node{node.number}"

    def node_dir(self, node: Node) -> Path:
        return self.root / f"node{node.number}"

    def docker_host(self, node: Node) -> str:
        return f"unix://{self.node_dir(node) / 'docker.sock'}"

    def enter(self, node: Node) -> list[str]:
        """The command prefix that runs a program inside a node's namespaces."""
        return [
            "nsenter",
            f"--net=/run/netns/{self.netns(node)}",
            f"--mount={self.ns_dir / f'node{node.number}.mnt'}",
            f"--uts={self.ns_dir / f'node{node.number}.uts'}",
            "--",
        ]

    def client_env(self, node: Node | None = None) -> dict[str, str]:
        """What the aws CLI, boto3 and docker need to reach the cluster (from a node: its own)."""
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        if node is not None:
            env["DOCKER_HOST"] = self.docker_host(node)
            env["FAKESTOR_INSTANCE_ID"] = node.instance_id
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://{IMDS_ADDRESS}/"
        return env

    def node(self, number: int) -> Node:
        for node in self.nodes:
            if node.number == number:
                return node
        raise ClusterError(f"there is no node {number}; the cluster has {len(self.nodes)}")

    # ---- the record --------------------------------------------------------------------
    @property
    def record(self) -> Path:
        return self.root / "cluster.json"

    def save(self) -> None:
        """Write the record (thread-safe: `up` starts the nodes side by side)."""
        with _SAVING:
            data = asdict(self)
            data["root"] = str(self.root)
            scratch = self.record.with_suffix(".tmp")
            scratch.write_text(json.dumps(data, indent=2))
            os.replace(scratch, self.record)

    @classmethod
    def load(cls, root: Path) -> Cluster | None:
        try:
            data = json.loads((root / "cluster.json").read_text())
        except FileNotFoundError:
            return None
        nodes = [Node(**node) for node in data.pop("nodes")]
        data["root"] = Path(data["root"])
        return cls(**data, nodes=nodes)


# ---- small process helpers ----------------------------------------------------------------
def run(command: Sequence[str], *, check: bool = True, timeout: float = 300,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env} if env else None,
    )  # fmt: skip
    if check and result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        raise ClusterError(f"{' '.join(command)} failed: {why[-1] if why else result.returncode}")
    return result


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is not alive.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop(pid: int, timeout: float = 60, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal a process we started and wait for it to end (SIGKILL after the timeout)."""
    if not alive(pid):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def spawn(command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
    """A daemon of the cluster: its own session, output to LOG; returns its pid."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
    return process.pid


def wait_for_line(log: Path, pattern: str, pid: int, what: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    compiled = re.compile(pattern)
    while time.monotonic() < deadline:
        match = compiled.search(log.read_text(errors="replace")) if log.exists() else None
        if match:
            return match
        if not alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise ClusterError(f"{what} exited: {' | '.join(tail)} (log {log})")
        time.sleep(0.1)
    raise ClusterError(f"{what} did not start in {timeout:.0f} s (log {log})")


def busybox_tar(path: Path) -> None:
    with tarfile.open(path, "w") as archive:
        archive.add("/bin/busybox", arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)


def processes_in_netns(netns: str) -> list[int]:
    """The processes of a node: those in its network namespace and all their descendants
    (a container runs in a network namespace of its own, under the node's shim)."""
    result = run(["ip", "netns", "pids", netns], check=False)
    roots = [int(pid) for pid in result.stdout.split()] if result.returncode == 0 else []
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = set(roots), list(roots)
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found:
                found.add(child)
                queue.append(child)
    return sorted(found)


def loop_devices_under(root: Path) -> Iterator[str]:
    """Loop devices whose backing file lies under ROOT (the nodes' NBD files)."""
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().startswith(str(root) + "/"):
                yield "/dev/" + backing.parent.parent.name
