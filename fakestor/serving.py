"""Running a waitress server until SIGTERM or SIGINT, then stopping it cleanly."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.wasyncore import ExitNow

log = logging.getLogger(__name__)


class _Shutdown(ExitNow):
    """Raised by the signal handler: waitress lets ExitNow out of its event loop."""


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signal.Signals(signum).name)


def run_until_signalled(server: BaseWSGIServer | MultiSocketServer) -> None:
    """Serve until SIGTERM/SIGINT; requests in flight finish before the sockets close."""
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    try:
        server.run()
    except _Shutdown as stop:
        log.info("stopping on %s", stop)
    finally:
        server.task_dispatcher.shutdown(timeout=10)
        server.close()
