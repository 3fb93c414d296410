"""The fuse filesystem's fault hook: what an I/O on a volume's file meets before the chunk
store serves it (an error, a delay, or a suspension), set per volume by the control plane."""

from __future__ import annotations

import errno
import threading
import time

import pyfuse3
import trio

from backends.io_faults import IoFault

POLL = 0.05  # seconds between looks at a suspended volume's fault


class IoFaults:
    """The faults in force, by image name; `check` is awaited before each read and write."""

    def __init__(self) -> None:
        self._faults: dict[str, IoFault] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._releases: dict[str, int] = {}  # name -> times its waiting I/O was failed

    def close(self) -> None:
        """Fail the I/O that waits on an impaired volume, so the filesystem can stop."""
        self._closing = True

    def release_waiting(self, name: str) -> None:
        """Fail the I/O waiting on the impaired volume now (its device was force-detached);
        the fault stays for the next attachment."""
        with self._lock:
            self._releases[name] = self._releases.get(name, 0) + 1

    def set(self, name: str, fault: IoFault | None) -> None:
        with self._lock:
            if fault is None:
                self._faults.pop(name, None)
            else:
                self._faults[name] = fault

    def get(self, name: str) -> IoFault | None:
        return self._faults.get(name)

    async def check(self, name: str, operation: str, offset: int, size: int) -> None:
        """Delay, block or fail this I/O as the volume's fault says; raises FUSEError(EIO)."""
        if not self._faults:  # the common case: one dict test per I/O
            return
        fault = self._faults.get(name)
        if fault is None:
            return
        if fault.gone:
            raise pyfuse3.FUSEError(errno.ENXIO)
        if fault.impaired:
            deadline = time.monotonic() + fault.impaired_timeout
            release = self._releases.get(name, 0)
            while (current := self._faults.get(name)) is not None and current.impaired:
                if (
                    self._closing
                    or self._releases.get(name, 0) != release
                    or time.monotonic() >= deadline
                ):
                    raise pyfuse3.FUSEError(errno.EIO)
                await trio.sleep(POLL)
            fault = current
            if fault is None:
                return
        if fault.latency:
            await trio.sleep(fault.latency)
        if fault.fails(operation, offset, size):
            raise pyfuse3.FUSEError(errno.EIO)
