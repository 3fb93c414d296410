"""Background work: the data-plane half of each state transition.

A request records the transitional state (`creating`, `attaching`, ...) and
returns; a task then does the slow backend work and records the final state.
Tasks touching the same resource run one at a time, in submission order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)


class TaskRunner:
    def __init__(self, workers: int = 4) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fakestor-task")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._pending: set[Future[None]] = set()
        self._pending_guard = threading.Lock()
        self.stopping = threading.Event()

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def submit(self, keys: Iterable[str], work: Callable[[], None], what: str) -> None:
        """Run `work` in the background holding the locks of `keys` (resource ids)."""
        locks = [self._lock_for(key) for key in sorted(set(keys))]

        def run() -> None:
            for lock in locks:
                lock.acquire()
            try:
                if not self.stopping.is_set():
                    work()
            except Exception:
                log.exception("background task failed: %s", what)
            finally:
                for lock in reversed(locks):
                    lock.release()

        future = self._executor.submit(run)
        with self._pending_guard:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._pending_guard:
            self._pending.discard(future)

    def idle(self) -> bool:
        with self._pending_guard:
            return not self._pending

    def sleep(self, seconds: float) -> bool:
        """Wait between retries; False once the runner is stopping."""
        return not self.stopping.wait(seconds)

    def shutdown(self) -> None:
        """Stop taking work, let running tasks finish; queued ones are resumed at next start."""
        self.stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
