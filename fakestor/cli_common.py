"""What the `fakestor` subcommands share: the one-line error and address arguments."""

from __future__ import annotations

import argparse

from fakestor.server import DEFAULT_PORT


class CliError(Exception):
    """A problem with the command line or environment, reported as one line."""


def listen_address(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = value, str(DEFAULT_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range")
    return host.strip("[]") or "127.0.0.1", port


def imds_listen_address(value: str) -> tuple[str, int]:
    """HOST[:PORT] of instance metadata: port 80 (EC2's) unless given."""
    return listen_address(value if ":" in value else f"{value}:80")
