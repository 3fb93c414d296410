"""NBD exports of volume files for other nodes: one nbdkit process per attachment, reachable
with its TLS-PSK key and export name (both secrets), closed at once when told to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backends import BackendError

log = logging.getLogger(__name__)

READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Export:
    """Where and how a node reaches one attachment's data."""

    host: str
    port: int
    name: str  # the export name: a secret, as is the key
    psk_identity: str
    psk: str  # hex, as nbdkit's PSK file holds it
    tls: bool = False  # TLS-PSK required; else the export name alone admits a client


def free_port(host: str) -> int:
    """A TCP port free on `host` now (nbdkit binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def nbdkit_command(export: Export, file: Path, psk_file: Path, pid_file: Path) -> list[str]:
    # The ip filter of Debian's nbdkit 1.32 cannot parse IPv4 addresses ("cannot parse
    # address"), so a node is told apart by the export name (and key) it holds.
    tls = ["--tls=require", f"--tls-psk={psk_file}"] if export.tls else ["--tls=off"]
    return [
        "nbdkit", "--foreground", "--exit-with-parent",
        "--ipaddr", export.host, "--port", str(export.port),
        "--pidfile", str(pid_file),
        *tls,
        "--filter=exportname",
        "file", f"file={file}",
        "exportname-strict=true", f"exportname={export.name}", "exportname-list=error",
    ]  # fmt: skip


class NbdExports:
    """The nbdkit processes this server runs, by (volume id, instance id).

    An export admits a client that names its secret export name; with `tls`, only
    over TLS with its pre-shared key too (which costs throughput: see the README).

    Files (keys, pid files) live in `directory`. nbdkit exits with the server (and
    so with a crash of it); a restarted server opens the recorded exports again with
    the same address and secrets, and the nodes' clients reconnect.
    """

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        self.directory = directory
        self.tls = tls  # whether new exports require TLS-PSK (recorded ones keep theirs)
        self._processes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        # nbdkit's --exit-with-parent follows the thread that started it: start every
        # nbdkit from one thread that lives as long as the server.
        self._starter: threading.Thread | None = None

    def _paths(self, key: tuple[str, str]) -> tuple[Path, Path, Path]:
        stem = self.directory / f"{key[0]}-{key[1]}"
        return stem.with_suffix(".psk"), stem.with_suffix(".pid"), stem.with_suffix(".log")

    def open(self, volume_id: str, instance_id: str, export: Export, file: Path) -> int:
        """Serve `file` as `export` (already served: nothing); returns nbdkit's pid.

        Raises BackendError if nbdkit cannot start or does not listen in time.
        """
        key = (volume_id, instance_id)
        with self._lock:
            running = self._processes.get(key)
            if running is not None and running.poll() is None:
                return running.pid
            self.directory.mkdir(parents=True, exist_ok=True)
            psk_file, pid_file, log_file = self._paths(key)
            pid_file.unlink(missing_ok=True)
            fd = os.open(psk_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as keys:
                keys.write(f"{export.psk_identity}:{export.psk}\n")
            command = nbdkit_command(export, file, psk_file, pid_file)
            process = _start_in_thread(command, log_file)
            deadline = time.monotonic() + READY_TIMEOUT
            while not pid_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    _kill(process)
                    output = log_file.read_text(errors="replace").strip()
                    raise BackendError(
                        f"nbdkit did not serve {volume_id} on {export.host}:{export.port}: "
                        f"{output or 'timed out'}"
                    )
                time.sleep(0.02)
            self._processes[key] = process
            log.info("exporting %s to %s on %s:%d (pid %d)", volume_id, instance_id,
                     export.host, export.port, process.pid)  # fmt: skip
            return process.pid

    def close(self, volume_id: str, instance_id: str) -> None:
        """Close the export at once (SIGKILL: nbdkit waits for its clients on SIGTERM),
        so the node's next I/O fails; not open is not an error."""
        key = (volume_id, instance_id)
        with self._lock:
            process = self._processes.pop(key, None)
            if process is not None:
                _kill(process)
                log.info("closed the export of %s to %s", volume_id, instance_id)
            for path in self._paths(key):
                path.unlink(missing_ok=True)

    def close_all(self) -> None:
        for volume_id, instance_id in list(self._processes):
            self.close(volume_id, instance_id)

    def is_open(self, volume_id: str, instance_id: str) -> bool:
        process = self._processes.get((volume_id, instance_id))
        return process is not None and process.poll() is None


def kill_stale(pid: int | None, export_name: str) -> None:
    """Kill an nbdkit a previous run of the server left serving `export_name`, if any."""
    if not pid:
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if (
        command
        and command[0].endswith(b"nbdkit")
        and f"exportname={export_name}".encode() in (command)
    ):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_in_thread(command: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start nbdkit from a thread that lives as long as the process (see NbdExports)."""
    return _LongLivedStarter.get().run(command, log_file)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


class _LongLivedStarter:
    """One daemon thread that starts processes on request, never exiting before the
    server: a parent-death signal is sent when the thread that forked a child ends."""

    _instance: _LongLivedStarter | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._requests: list[tuple[list[str], Path, threading.Event, list[object]]] = []
        self._wake = threading.Condition()
        threading.Thread(target=self._serve, name="fakestor-nbdkit", daemon=True).start()

    @classmethod
    def get(cls) -> _LongLivedStarter:
        with cls._guard:
            if cls._instance is None:
                cls._instance = _LongLivedStarter()
            return cls._instance

    def run(self, command: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        done = threading.Event()
        result: list[object] = []
        with self._wake:
            self._requests.append((command, log_file, done, result))
            self._wake.notify()
        done.wait()
        outcome = result[0]
        if isinstance(outcome, BaseException):
            raise BackendError(f"cannot start nbdkit: {outcome}")
        assert isinstance(outcome, subprocess.Popen)
        return outcome

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._requests:
                    self._wake.wait()
                command, log_file, done, result = self._requests.pop(0)
            try:
                with log_file.open("wb") as output:
                    result.append(
                        subprocess.Popen(
                            command,
                            stdin=subprocess.DEVNULL,
                            stdout=output,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            except OSError as failure:
                result.append(failure)
            done.set()
