"""`fakestor lab propagation`: a guided lab of mount propagation, run for real.

Each step prints the commands it runs and `findmnt` before and after, checks
that the kernel did what the step teaches (and fails loudly if not), and
undoes what it did; at the end the machine's mount table must be as it was.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fakestor.mounts import (
    Mount,
    covered_by,
    is_mounted,
    link,
    mount_table,
    parse_mountinfo,
    same_filesystem,
    why_same_filesystem,
)

IMAGE = "fakestor/busybox:latest"
FINDMNT = ["findmnt", "-o", "ID,PARENT,SOURCE,TARGET,PROPAGATION", "-R"]


class LabFailure(Exception):
    """The kernel (or Docker) did not behave as the step says it should."""


class LabSkip(Exception):
    """A step cannot run here (no dockerd, no plugin); the message says why."""


def _docker_binary() -> str:
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


@dataclass
class Lab:
    root: Path
    plugin: str
    out: Callable[[str], None] = print

    # ---- output and commands --------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.out(text)

    def run(
        self, *command: str, check: bool = True, show: bool = True
    ) -> subprocess.CompletedProcess[str]:
        if show:
            self.say(f"  $ {shlex.join(command)}")
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise LabFailure(f"{shlex.join(command)} failed: {result.stderr.strip()}")
        return result

    def findmnt(self, label: str, target: Path) -> None:
        result = subprocess.run([*FINDMNT, "--", str(target)], capture_output=True, text=True)
        self.say(f"  findmnt {label}:")
        for line in (result.stdout.strip() or "(no mount at or under it)").splitlines():
            self.say(f"    {line}")
        self.explain_seen_twice(mount_table(), target)

    def findmnt_in(self, pid: int, label: str, target: Path) -> None:
        result = subprocess.run(
            ["nsenter", "-t", str(pid), "-m", *FINDMNT, "--", str(target)],
            capture_output=True, text=True,
        )  # fmt: skip
        self.say(f"  findmnt {label} (nsenter -t {pid} -m findmnt ...):")
        for line in (result.stdout.strip() or "(no mount at or under it)").splitlines():
            self.say(f"    {line}")
        self.explain_seen_twice(mount_table(pid), target)

    def explain_seen_twice(self, table: list[Mount], target: Path) -> None:
        """findmnt lists a filesystem mounted at two places as two alike lines: say which
        mounts they are, why there are two, and which one no path reaches."""
        link(table)
        top = str(target)
        told: set[frozenset[int]] = set()
        for mount in table:
            if mount.target != top and not mount.target.startswith(top.rstrip("/") + "/"):
                continue
            for other in same_filesystem(mount, table):
                if {mount.mount_id, other.mount_id} in told:
                    continue
                told.add(frozenset((mount.mount_id, other.mount_id)))
                where = (
                    f"both at {mount.target}"
                    if mount.target == other.target
                    else f"at {mount.target} and {other.target}"
                )
                self.say(
                    f"    mounts {mount.mount_id} and {other.mount_id} are the same filesystem "
                    f"({mount.source}, device {mount.device}, root {mount.root}), {where}: "
                    f"{why_same_filesystem(mount, other, table)}"
                )
                for copy in (mount, other):
                    cover = covered_by(copy, table)
                    if cover is not None:
                        self.say(
                            f"    mount {copy.mount_id} is hidden: mount {cover.mount_id} is "
                            f"mounted over {cover.target}, so no path leads to it"
                        )

    def saw(self, who: str, command: str, output: str) -> None:
        """What a container (or the host) saw, printed next to the check made of it."""
        seen = ", ".join(output.strip().splitlines()) or "(nothing)"
        self.say(f"    {who} sees: {command} -> {seen}")

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            raise LabFailure(f"expected: {what}")
        self.say(f"  ok: {what}")

    def host_sees(self, path: Path) -> bool:
        return is_mounted(path)

    def namespace_sees(self, pid: int, path: Path) -> bool:
        result = self.run("nsenter", "-t", str(pid), "-m", "findmnt", "-n", "--", str(path),
                          check=False, show=False)  # fmt: skip
        return result.returncode == 0

    @contextmanager
    def namespace(self, propagation: str, script: str) -> Iterator[int]:
        """A process in a new mount namespace running `script`, then waiting; yields its pid."""
        command = ["unshare", "--mount", "--propagation", propagation, "sh", "-c",
                   f"{script}\necho ready\nexec sleep 300"]  # fmt: skip
        self.say(f"  $ {shlex.join(command[:4])} sh -c {shlex.quote(script)}  &")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            if process.stdout.readline().strip() != "ready":
                raise LabFailure(f"the namespace script failed: {process.stderr.read().strip()}")
            yield process.pid
        finally:
            process.kill()
            process.wait()

    # ---- steps ------------------------------------------------------------------------

    def step_private_namespace(self) -> None:
        target = self.root / "private"
        target.mkdir()
        self.say("A mount made in a private mount namespace stays there.")
        self.findmnt("before", target)
        with self.namespace("private", f"mount -t tmpfs lab-private {target}") as pid:
            self.findmnt_in(pid, "inside the namespace", target)
            self.findmnt("after, seen from the host", target)
            self.expect(self.namespace_sees(pid, target), "the namespace sees its mount")
            self.expect(not self.host_sees(target), "the host does not see it")

    def step_shared_and_slave(self) -> None:
        area = self.root / "shared"
        area.mkdir()
        self.say("With the parent mount shared, a mount made in another namespace appears on")
        self.say("the host; a slave receives its master's mounts but sends none back.")
        self.run("mount", "--bind", str(area), str(area))
        try:
            self.run("mount", "--make-shared", str(area))
            self.findmnt("before", area)
            (area / "from-peer").mkdir()
            with self.namespace("unchanged", f"mount -t tmpfs from-peer {area}/from-peer"):
                self.findmnt("after a mount in a peer namespace", area)
                self.expect(self.host_sees(area / "from-peer"), "the peer's mount reached the host")
            (area / "from-host").mkdir()
            (area / "from-slave").mkdir()
            with self.namespace("slave", "true") as pid:
                self.run("mount", "-t", "tmpfs", "from-host", str(area / "from-host"))
                self.run("nsenter", "-t", str(pid), "-m", "mount", "-t", "tmpfs", "from-slave",
                         str(area / "from-slave"))  # fmt: skip
                self.findmnt("after, on the host", area)
                self.findmnt_in(pid, "in the slave namespace", area)
                self.expect(self.namespace_sees(pid, area / "from-host"),
                            "the slave received the host's mount")  # fmt: skip
                self.expect(not self.host_sees(area / "from-slave"),
                            "the host did not receive the slave's mount")  # fmt: skip
        finally:
            self.run("umount", "-R", str(area), show=False, check=False)

    # ---- Docker steps --------------------------------------------------------------------

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(_docker_binary(), *args, check=check)

    def require_docker(self) -> None:
        probe = subprocess.run([_docker_binary(), "info"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise LabSkip("needs a running dockerd (start one, or set DOCKER_HOST)")
        if subprocess.run([_docker_binary(), "image", "inspect", IMAGE],
                          capture_output=True).returncode != 0:  # fmt: skip
            if not os.path.exists("/bin/busybox"):
                raise LabSkip(
                    "needs /bin/busybox to make its image (apt-get install busybox-static)"
                )
            with tempfile.TemporaryDirectory() as scratch:
                rootfs = Path(scratch) / "rootfs.tar"
                with tarfile.open(rootfs, "w") as archive:
                    archive.add("/bin/busybox", arcname="bin/busybox")
                    for applet in ("sh", "ls", "cat", "mkdir", "mount", "sleep", "echo"):
                        link = tarfile.TarInfo(f"bin/{applet}")
                        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                        archive.addfile(link)
                self.docker("import", str(rootfs), IMAGE)

    @contextmanager
    def container(self, *args: str) -> Iterator[str]:
        name = f"fakestor-lab-{uuid.uuid4().hex[:8]}"
        self.docker("run", "-d", "--name", name, "--network", "none", *args)
        try:
            yield name
        finally:
            self.run(_docker_binary(), "rm", "-f", name, check=False, show=False)

    def _wait_for_file(self, path: Path) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if path.exists():
                return True
            time.sleep(0.1)
        return False

    def _plugin_script(self) -> str:
        """What a volume plugin does, in miniature: mount a filesystem, write to it."""
        return "mkdir -p /mnt/volumes/vol && mount -t tmpfs vol /mnt/volumes/vol && " \
               "echo data > /mnt/volumes/vol/file && sleep 300"  # fmt: skip

    def step_private_bind(self) -> None:
        self.require_docker()
        area = self.root / "private-bind"
        area.mkdir()
        self.say("A 'plugin' container mounts a volume under a bind mount of the host that is")
        self.say("private (Docker's default): the application container sees an empty directory.")
        plugin_args = ["--cap-add", "SYS_ADMIN", "-v", f"{area}:/mnt/volumes"]
        with self.container(*plugin_args, IMAGE, "sh", "-c", self._plugin_script()) as plugin:
            time.sleep(1)
            self.findmnt("on the host", area)
            on_host = self.run("ls", "-A", str(area / "vol"), check=False)
            self.saw("the host", f"ls -A {area / 'vol'}", on_host.stdout or on_host.stderr)
            app = ["run", "--rm", "--network", "none", "-v", f"{area}/vol:/data", IMAGE]
            listing = self.docker(*app, "ls", "-A", "/data").stdout
            self.saw("the application container", "ls -A /data", listing)
            self.expect(listing.strip() == "", "the application container sees an empty directory")
            inside = self.docker("exec", plugin, "cat", "/mnt/volumes/vol/file").stdout
            self.saw("the plugin container", "cat /mnt/volumes/vol/file", inside)
            self.expect(inside.strip() == "data", "while the plugin container sees its volume")

    def step_shared_bind(self) -> None:
        self.require_docker()
        area = self.root / "shared-bind"
        area.mkdir()
        self.say("The fix: bind with rshared propagation. Docker refuses it while the host path")
        self.say("is not itself on a shared mount; once it is, the volume reaches the host and")
        self.say("every container.")
        shared_bind = f"{area}:/mnt/volumes:rshared"
        refused = self.docker(
            "run", "--rm", "--network", "none", "-v", shared_bind, IMAGE, "true", check=False
        )
        self.say(f"    {refused.stderr.strip()}")
        if refused.returncode == 0:
            # On a host whose / is shared (systemd), the first attempt already works.
            self.say("    (this host's mounts are shared already, so Docker accepts it)")
        else:
            self.expect("shared" in refused.stderr, "Docker refuses: the host path is not shared")
        self.run("mount", "--bind", str(area), str(area))
        try:
            self.run("mount", "--make-shared", str(area))
            plugin_args = ["--cap-add", "SYS_ADMIN", "-v", f"{area}:/mnt/volumes:rshared"]
            with self.container(*plugin_args, IMAGE, "sh", "-c", self._plugin_script()):
                self.expect(self._wait_for_file(area / "vol" / "file"),
                            "the plugin's mount reached the host")  # fmt: skip
                self.findmnt("on the host", area)
                on_host = self.run("cat", str(area / "vol" / "file")).stdout
                self.saw("the host", f"cat {area / 'vol' / 'file'}", on_host)
                app = ["run", "--rm", "--network", "none", "-v", f"{area}/vol:/data", IMAGE]
                listing = self.docker(*app, "ls", "-A", "/data").stdout
                self.saw("the application container", "ls -A /data", listing)
                seen = self.docker(*app, "cat", "/data/file").stdout
                self.saw("the application container", "cat /data/file", seen)
                self.expect(seen.strip() == "data", "the application container sees the volume")
        finally:
            self.run("umount", "-R", str(area), show=False, check=False)

    def step_managed_plugin(self) -> None:
        self.require_docker()
        enabled = subprocess.run(
            [_docker_binary(), "plugin", "inspect", "-f", "{{.Enabled}} {{.Id}}", self.plugin],
            capture_output=True, text=True,
        )  # fmt: skip
        if enabled.returncode != 0 or not enabled.stdout.startswith("true"):
            raise LabSkip(f"needs the managed plugin {self.plugin} enabled (run devenv/up first)")
        plugin_id = enabled.stdout.split()[1]
        root = self.docker("info", "--format", "{{.DockerRootDir}}").stdout.strip()
        propagated = Path(root) / "plugins" / plugin_id / "propagated-mount"
        volume = f"fakestor-lab-{uuid.uuid4().hex[:8]}"
        self.say("fakestor's managed plugin mounts volumes under its propagatedMount, which")
        self.say("Docker makes rshared: the mount appears on the host and in the container.")
        self.docker("volume", "create", "-d", self.plugin, volume)
        try:
            with self.container("-v", f"{volume}:/data", IMAGE, "sh", "-c",
                                "echo from-the-app > /data/file && sleep 300") as app:  # fmt: skip
                target = propagated / volume
                self.expect(self._wait_for_file(target / "data" / "file"),
                            "the volume is mounted on the host under propagated-mount")  # fmt: skip
                self.findmnt("on the host", target)
                shown = self.run(
                    "findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", str(target)
                ).stdout
                self.expect(shown.strip().startswith("shared"), "and that mount is shared")
                written = self.docker("exec", app, "cat", "/data/file").stdout
                self.saw("the application container", "cat /data/file", written)
                on_host = self.run("cat", str(target / "data" / "file")).stdout
                self.saw("the host", f"cat {target / 'data' / 'file'}", on_host)
                self.expect(
                    written.strip() == on_host.strip() == "from-the-app",
                    "the application container writes to it, the host reads it",
                )
                self.container_view(app, target)
        finally:
            self.docker("volume", "rm", volume, check=False)

    def container_view(self, app: str, target: Path) -> None:
        """The application container's /data, from its own mount table: the volume's
        filesystem, the one the host has at `target`, shown from its data directory."""
        table = self.docker("exec", app, "cat", "/proc/self/mountinfo").stdout
        data = next((mount for mount in parse_mountinfo(table) if mount.target == "/data"), None)
        if data is None:
            raise LabFailure("expected: a mount at /data in the application container")
        self.saw(
            "the application container",
            "its /data in /proc/self/mountinfo",
            f"{data.source} {data.fstype}, device {data.device}, root {data.root}",
        )
        on_host = [mount for mount in mount_table() if mount.target == str(target)]
        self.expect(
            any(mount.device == data.device for mount in on_host),
            f"that is the filesystem the host has at {target}",
        )


STEPS = [
    ("a mount in a private namespace", "step_private_namespace"),
    ("shared and slave mounts", "step_shared_and_slave"),
    ("a plugin container behind a private bind", "step_private_bind"),
    ("the :rshared fix, and when it fails", "step_shared_bind"),
    ("fakestor's managed plugin and propagatedMount", "step_managed_plugin"),
]


def _mount_table() -> list[str]:
    return sorted(f"{mount.root} {mount.target}" for mount in mount_table())


def run_lab(plugin: str, out: Callable[[str], None] = print) -> int:
    """Run every step; returns the number of failures (skips are not failures)."""
    if os.geteuid() != 0:
        raise LabFailure("the lab makes real mounts and namespaces: run it as root")
    for tool in ("unshare", "nsenter", "findmnt", "mount", "umount"):
        if shutil.which(tool) is None:
            raise LabFailure(f"the lab needs {tool} (apt-get install util-linux mount)")
    before = _mount_table()
    failures = 0
    root = Path(tempfile.mkdtemp(prefix="fakestor-lab-"))
    try:
        for number, (title, method) in enumerate(STEPS, start=1):
            out(f"\n== step {number}: {title}")
            lab = Lab(root / str(number), plugin, out)
            lab.root.mkdir()
            try:
                getattr(lab, method)()
            except LabSkip as skip:
                out(f"  skipped: {skip}")
            except LabFailure as failure:
                failures += 1
                out(f"  FAILED: {failure}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    after = _mount_table()
    if after != before:
        extra = sorted(set(after) - set(before))
        gone = sorted(set(before) - set(after))
        out(f"\nFAILED: the mount table changed (added {extra}, removed {gone})")
        failures += 1
    else:
        out("\nThe machine's mounts are as they were before the lab.")
    return failures
