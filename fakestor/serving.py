"""Serving the app with waitress: EC2-shaped errors for requests waitress refuses itself,
and running until SIGTERM or SIGINT, then stopping cleanly."""

from __future__ import annotations

import logging
import signal
import uuid
from types import FrameType
from typing import Any, cast

import waitress.server
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.task import ErrorTask
from waitress.wasyncore import ExitNow

from fakestor import errors
from fakestor.ec2 import wire

log = logging.getLogger(__name__)

XML = "text/xml;charset=UTF-8"
MAX_REQUEST_HEADER_BYTES = 256 * 1024  # waitress's default: request line and headers


def _ec2_error(status: int, detail: str) -> errors.Ec2Error:
    """The EC2 error for a request waitress refused before the application saw it."""
    if status == 431:
        return errors.RequestHeaderFieldsTooLarge(MAX_REQUEST_HEADER_BYTES)
    if status == 413:
        return errors.RequestEntityTooLarge(None)
    if status < 500:
        return errors.MalformedHttpRequest(detail.strip() or "The HTTP request is malformed.")
    return errors.InternalError("fakestor failed to handle this request; see the server log.")


class _Ec2ErrorTask(ErrorTask):
    """Answers waitress's own refusals (431, 413, 400) with EC2's XML error document."""

    def execute(self) -> None:
        refusal = cast(Any, self.request).error  # the stubs type the parser as its error
        error = _ec2_error(refusal.code, str(refusal.body))
        body = wire.serialize_error(error.code, error.message, str(uuid.uuid4()))
        self.status = f"{refusal.code} {refusal.reason}"
        self.response_headers = [*self.response_headers, ("Content-Type", XML)]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Ec2Channel(HTTPChannel):
    error_task_class = _Ec2ErrorTask


def create_server(
    app: Any, listen: list[tuple[str, int]], threads: int, max_body: int
) -> BaseWSGIServer | MultiSocketServer:
    """A waitress server for `app` on each host:port whose own error pages are EC2 errors.

    Raises OSError if an address cannot be bound, ValueError if it is not one.
    """
    server = waitress.server.create_server(
        app,
        listen=" ".join(f"{host}:{port}" for host, port in listen),
        threads=threads,
        ident="fakestor",
        max_request_body_size=max_body,
        max_request_header_size=MAX_REQUEST_HEADER_BYTES,
    )
    listeners = (server.map or {}).values() if isinstance(server, MultiSocketServer) else [server]
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = _Ec2Channel
    return server


def bound_port(server: BaseWSGIServer | MultiSocketServer) -> int:
    """The port the server's first address is bound to (the one port 0 chose)."""
    if isinstance(server, MultiSocketServer):
        return int(server.effective_listen[0][1])
    return int(server.socket.getsockname()[1]) if server.socket else 0


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
