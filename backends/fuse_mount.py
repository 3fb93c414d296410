"""A pyfuse3 filesystem mounted and served by a trio loop in a thread of its own: the fuse
backend's block store and the loopdev backend's policy layer."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pyfuse3
import trio

log = logging.getLogger(__name__)


class FuseMount:
    """`operations` mounted at `mountpoint` between `start` and `stop`; `what` names the
    filesystem in errors and logs, `fsname` and `subtype` in the mount table."""

    def __init__(
        self, operations: pyfuse3.Operations, mountpoint: Path, *, what: str, fsname: str,
        subtype: str, thread_name: str,
    ) -> None:  # fmt: skip
        self.operations = operations
        self.mountpoint = mountpoint
        self._what = what
        self._options = {f"fsname={fsname}", f"subtype={subtype}"}
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None:
            raise RuntimeError(f"cannot mount {self._what} at {self.mountpoint}: {self._failure}")
        if not self._started.is_set():
            raise RuntimeError(f"mounting {self._what} at {self.mountpoint} timed out")
        if not os.path.ismount(self.mountpoint):
            raise RuntimeError(f"{self._what} did not appear mounted at {self.mountpoint}")

    def _serve(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            options = set(pyfuse3.default_options)
            # libfuse 3 negotiates 1 MiB requests (max_write, max_pages) by itself.
            options.update(self._options)
            pyfuse3.init(self.operations, str(self.mountpoint), options)
            self._started.set()
            try:
                await pyfuse3.main(min_tasks=4, max_tasks=64)
            finally:
                pyfuse3.close(unmount=True)

        try:
            trio.run(main)
        except BaseException as failure:  # reported to start(), or logged once running
            self._failure = failure
            if self._started.is_set():
                log.exception("%s stopped", self._what)
            self._started.set()

    def stop(self) -> None:
        """Unmount and end the serving thread."""
        if self._token is not None and self.running:
            trio.from_thread.run_sync(pyfuse3.terminate, trio_token=self._token)
            assert self._thread is not None
            self._thread.join(30)
        self._token = None
