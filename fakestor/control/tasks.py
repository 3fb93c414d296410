"""Background work: the data-plane half of each state transition.

A request records the transitional state (`creating`, `attaching`, ...) and
returns; a task then does the slow backend work and records the outcome.

Tasks name the resources they touch. Tasks sharing a resource run one at a
time in submission order (a queue per resource); a task waiting for its turn
holds no worker thread, so one busy volume never stalls work on the others.

A task that raises something unexpected is logged with its traceback, and its
`on_failure` records the transition's failed state, so no resource is left in a
transitional state by an error nobody foresaw.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Raised by a task to run again after `delay` seconds, behind work queued meanwhile."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay}s")
        self.delay = delay


FailureHandler = Callable[[Exception], None]


@dataclass(eq=False)
class _Task:
    keys: tuple[str, ...]
    work: Callable[[], None]
    what: str
    on_failure: FailureHandler | None = None
    started: bool = field(default=False)


class TaskRunner:
    def __init__(self, workers: int = 4) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fakestor-task")
        self._queues: dict[str, deque[_Task]] = {}
        self._guard = threading.Lock()
        self._outstanding = 0
        self._timers: set[threading.Timer] = set()
        self.stopping = threading.Event()

    def submit(
        self,
        keys: Iterable[str],
        work: Callable[[], None],
        what: str,
        on_failure: FailureHandler | None = None,
    ) -> None:
        """Queue `work` behind earlier tasks on any of `keys` (resource ids).

        If `work` raises anything but RetryLater, `on_failure` is called with the error.
        """
        task = _Task(tuple(sorted(set(keys))), work, what, on_failure)
        with self._guard:
            if self.stopping.is_set():
                return
            self._outstanding += 1
            for key in task.keys:
                self._queues.setdefault(key, deque()).append(task)
            self._start_ready([task])

    def _ready(self, task: _Task) -> bool:
        return not task.started and all(self._queues[key][0] is task for key in task.keys)

    def _start_ready(self, candidates: Iterable[_Task]) -> None:
        """Hand every candidate that is first in all its queues to a worker (guard held)."""
        for task in candidates:
            if self._ready(task):
                task.started = True
                self._executor.submit(self._run, task)

    def _run(self, task: _Task) -> None:
        retry: float | None = None
        try:
            if not self.stopping.is_set():
                task.work()
        except RetryLater as later:
            retry = later.delay
        except Exception as failure:
            log.exception("background task failed: %s: %s", task.what, failure)
            if task.on_failure is not None:
                try:
                    task.on_failure(failure)
                except Exception:
                    log.exception("cannot record the failure of %s", task.what)
        finally:
            self._finish(task)
        if retry is not None:
            self._retry(task, retry)

    def _finish(self, task: _Task) -> None:
        with self._guard:
            self._outstanding -= 1
            successors = []
            for key in task.keys:
                queue = self._queues[key]
                queue.popleft()
                if queue:
                    successors.append(queue[0])
                else:
                    del self._queues[key]
            if not self.stopping.is_set():
                self._start_ready(successors)

    def _retry(self, task: _Task, delay: float) -> None:
        def resubmit() -> None:
            with self._guard:
                self._timers.discard(timer)
            self.submit(task.keys, task.work, task.what, task.on_failure)

        timer = threading.Timer(delay, resubmit)
        timer.daemon = True
        with self._guard:
            if self.stopping.is_set():
                return
            self._timers.add(timer)
        timer.start()

    def idle(self) -> bool:
        with self._guard:
            return self._outstanding == 0 and not self._timers

    def sleep(self, seconds: float) -> bool:
        """Wait inside a task; False once the runner is stopping."""
        return not self.stopping.wait(seconds)

    def shutdown(self) -> None:
        """Stop taking work and let running tasks finish; the rest resumes at next start."""
        self.stopping.set()
        with self._guard:
            timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
