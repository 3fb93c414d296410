"""The `fakestor` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from backends import BACKEND_NAMES, BackendError
from fakestor.resources import Region
from fakestor.server import DEFAULT_PORT, ServerConfig, default_data_dir


class CliError(Exception):
    """A problem with the command line or environment, reported as one line."""


def _listen(value: str) -> tuple[str, int]:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fakestor", description="A local stand-in for Amazon EBS."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    server = commands.add_parser("server", help="serve the EC2 volume API and instance metadata")
    server.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", DEFAULT_PORT),
        metavar="HOST:PORT",
        help=f"address to serve on (default 127.0.0.1:{DEFAULT_PORT}; port 0 picks a free one)",
    )
    server.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"state and volume data (default {default_data_dir()})",
    )
    server.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="auto",
        help="data plane: loopdev (image files attached as loop devices; needs root), "
        "metadata (records only), or auto: loopdev when running as root, else metadata",
    )
    server.add_argument("--region", default="us-east-1", help="region name (default us-east-1)")
    server.add_argument(
        "--zones", default="abc", help="zone letters of the region (default abc: three zones)"
    )
    server.add_argument(
        "--account-id", default="123456789012", help="the account that owns everything"
    )
    server.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="metadata backend: how long each data-plane step takes, so clients see the "
        "creating/attaching/pending states (default 0)",
    )
    server.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="ACTION",
        help="answer UnauthorizedOperation to this action (glob, repeatable), to test "
        "clients' permission handling",
    )
    server.add_argument(
        "--imds-tokens",
        choices=("optional", "required"),
        default="optional",
        help="require IMDSv2 session tokens (default optional, as EC2's default)",
    )
    server.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def _run_server(args: argparse.Namespace) -> None:
    from fakestor.server import ServeError, serve

    host, port = args.listen
    if not args.zones.isalpha() or not args.zones.islower():
        raise CliError(f"--zones takes lowercase zone letters such as 'abc', not {args.zones!r}")
    if args.latency < 0:
        raise CliError("--latency must not be negative")
    if len(args.account_id) != 12 or not args.account_id.isdigit():
        raise CliError(f"--account-id must be 12 digits, not {args.account_id!r}")
    config = ServerConfig(
        host=host,
        port=port,
        data_dir=args.data_dir or default_data_dir(),
        backend=args.backend,
        region=Region(args.region, args.zones, args.account_id),
        latency=args.latency,
        deny=args.deny,
        imds_tokens_required=args.imds_tokens == "required",
    )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(config)
    except (BackendError, ServeError) as failure:
        raise CliError(str(failure)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "server":
            _run_server(args)
    except CliError as failure:
        print(f"fakestor: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
