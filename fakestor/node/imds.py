"""Instance metadata on a node: its own instance's, served at --imds-listen by passing each
request to the server's `/instances/<id>/latest/...` tree (IMDSv1 and v2 alike)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASSED_HEADERS = ("X-aws-ec2-metadata-token", "X-aws-ec2-metadata-token-ttl-seconds")


def imds_server(listen: tuple[str, int], endpoint: str, instance_id: str) -> ThreadingHTTPServer:
    """A server (not yet running) answering /latest/... with the instance's metadata."""
    upstream = f"{endpoint.rstrip('/')}/instances/{instance_id}"

    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"

        def _forward(self) -> None:
            if not self.path.startswith("/latest/"):
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            request = urllib.request.Request(
                upstream + self.path,
                method=self.command,
                data=self.rfile.read(length) if length else None,
                headers={h: v for h in PASSED_HEADERS if (v := self.headers.get(h)) is not None},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status, headers, body = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as failure:
                status, headers, body = failure.code, failure.headers, failure.read()
            except OSError:
                self.send_error(502, "the fakestor server cannot be reached")
                return
            self.send_response(status)
            for name in ("Content-Type", *PASSED_HEADERS):
                if headers.get(name) is not None:
                    self.send_header(name, headers[name])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _forward
        do_PUT = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(listen, Handler)
    server.daemon_threads = True
    return server


def serve_in_background(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="fakestor-node-imds", daemon=True)
    thread.start()
    return thread
