"""`fakestor server`: its arguments, their checks, and starting the server."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from backends import BACKEND_NAMES, BackendError
from fakestor.cli_common import CliError, listen_address
from fakestor.control.lifecycle_clock import DEFAULT_TIME_SCALE
from fakestor.control.quotas import DEFAULT_PENDING_SNAPSHOT_QUOTA
from fakestor.control.regions import PARTITION, ec2_regions, zone_letters
from fakestor.control.resources import Region
from fakestor.server import DEFAULT_PORT, ServerConfig, default_data_dir
from fakestor.throttling import RateSpecError, parse_rate


def add_server_parser(commands: Any) -> None:
    server = commands.add_parser("server", help="serve the EC2 volume API and instance metadata")
    server.add_argument(
        "--listen",
        type=listen_address,
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
        "fuse (a copy-on-write block store served with FUSE, attached the same way; needs "
        "root), metadata (records only), or auto: loopdev as root, else metadata",
    )
    server.add_argument(
        "--region",
        default="us-east-1",
        help="the host instance's region, and that of unsigned requests (default us-east-1); "
        "a signed request acts in the region of its signature",
    )
    server.add_argument(
        "--zones",
        default=None,
        help="zone letters of --region (default EC2's own: abcdef in us-east-1, abc in most)",
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
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        metavar="FACTOR",
        help="divide EC2's snapshot lifecycle durations (archival, restores, fast snapshot "
        "restore, lock periods, StartSnapshot's Timeout, which never drops under 10 s) by "
        "FACTOR (default 3600: an hour takes a second)",
    )
    server.add_argument(
        "--metrics-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often the CloudWatch AWS/EBS datapoints are taken from the devices' "
        "counters (default 60, as EBS; shorter for tests)",
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
        "--request-rate",
        action="append",
        default=[],
        metavar="SPEC",
        help="throttle requests as AWS does, with a token bucket per rate (repeatable; off "
        "unless given): SERVICE:ACTION=N/s (or /m), ACTION a name or a glob, optionally "
        ",burst=B (default N), e.g. ec2:DescribeVolumes=5/s, ec2:*=20/s, "
        "ebs:GetSnapshotBlock=1000/s; above it EC2 answers RequestLimitExceeded and the EBS "
        "direct APIs RequestThrottledException",
    )
    server.add_argument(
        "--performance-model",
        action="store_true",
        help="enforce EBS's IOPS and throughput limits (and gp2/st1/sc1 burst buckets) on "
        "every volume's I/O; the tag fakestor:performance-model=on|off overrides it per "
        "volume (fuse and loopdev backends)",
    )
    server.add_argument(
        "--loopdev-policy",
        choices=("when-needed", "always"),
        default="when-needed",
        help="loopdev backend: attach a volume through the policy layer (faults, performance "
        "model) only when it has an io fault or the model at attach time (when-needed, the "
        "default: others keep the kernel's direct path), or always, so faults set later "
        "apply at once",
    )
    server.add_argument(
        "--credit-time-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="make the gp2/st1/sc1 burst buckets FACTOR times smaller than EBS's, so they "
        "drain in seconds (default 1)",
    )
    server.add_argument(
        "--pending-snapshot-quota",
        type=int,
        default=DEFAULT_PENDING_SNAPSHOT_QUOTA,
        metavar="N",
        help="StartSnapshot answers ServiceQuotaExceededException while the account has N "
        f"pending snapshots in the region (default {DEFAULT_PENDING_SNAPSHOT_QUOTA}, AWS's "
        "'Pending snapshots per account')",
    )
    server.add_argument(
        "--imds-tokens",
        choices=("optional", "required"),
        default="optional",
        help="require IMDSv2 session tokens (default optional, as EC2's default)",
    )
    server.add_argument(
        "--imds-address",
        nargs="?",
        const="169.254.169.254",
        default=None,
        metavar="ADDRESS",
        help="also serve instance metadata at ADDRESS:80 (default 169.254.169.254), added to "
        "the loopback interface while the server runs (root); off unless given",
    )
    server.add_argument(
        "--node-tls",
        action="store_true",
        help="nodes' NBD exports require TLS with a per-attachment pre-shared key, besides "
        "their secret export name (slower: see the README's Nodes section)",
    )
    server.add_argument(
        "--credentials",
        type=Path,
        default=os.environ.get("FAKESTOR_CREDENTIALS") or None,
        metavar="FILE",
        help="verify every API request's SigV4 signature against the key pairs in FILE, one "
        "'ACCESS_KEY_ID SECRET_ACCESS_KEY' a line (default $FAKESTOR_CREDENTIALS; off if "
        "neither is given); needed to --listen beyond loopback",
    )
    server.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve beyond loopback without --credentials: anyone who reaches the port may "
        "use the API",
    )
    server.add_argument("-v", "--verbose", action="store_true", help="log every request")


def run_server(args: argparse.Namespace) -> None:
    from fakestor.auth import CredentialsError, is_loopback, load_credentials
    from fakestor.server import ServeError, serve

    host, port = args.listen
    if args.region not in ec2_regions():
        raise CliError(
            f"--region {args.region!r} is not an EC2 region of AWS's {PARTITION} partition "
            "(botocore's endpoints); name one such as us-east-1 or eu-west-1"
        )
    if args.zones is None:
        args.zones = zone_letters(args.region)
    if not args.zones.isalpha() or not args.zones.islower():
        raise CliError(f"--zones takes lowercase zone letters such as 'abc', not {args.zones!r}")
    if args.time_scale <= 0:
        raise CliError("--time-scale must be positive")
    if args.metrics_interval < 1:
        raise CliError("--metrics-interval must be at least 1 second")
    if args.latency < 0:
        raise CliError("--latency must not be negative")
    if args.credit_time_scale <= 0:
        raise CliError("--credit-time-scale must be positive")
    if args.pending_snapshot_quota < 0:
        raise CliError("--pending-snapshot-quota must not be negative")
    for spec in args.request_rate:
        try:
            parse_rate(spec)
        except RateSpecError as failure:
            raise CliError(f"--request-rate: {failure}") from None
    if len(args.account_id) != 12 or not args.account_id.isdigit():
        raise CliError(f"--account-id must be 12 digits, not {args.account_id!r}")
    address = _check_listen(host, port)
    credentials = None
    if args.credentials is not None:
        try:
            credentials = load_credentials(Path(args.credentials))
        except CredentialsError as failure:
            raise CliError(str(failure)) from None
    if credentials is None and not is_loopback(address) and not args.insecure_no_auth:
        raise CliError(
            f"--listen {host} is reachable beyond loopback: give --credentials FILE (lines "
            "'ACCESS_KEY_ID SECRET_ACCESS_KEY') so every request's signature is verified, "
            "or --insecure-no-auth to serve unverified"
        )
    data_dir = args.data_dir or default_data_dir()
    not_a_dir = False
    with contextlib.suppress(OSError):  # unreadable: the server says what it lacks
        not_a_dir = data_dir.exists() and not data_dir.is_dir()
    if not_a_dir:
        raise CliError(
            f"--data-dir {data_dir} is not a directory; name a directory (or a new path)"
        )
    config = ServerConfig(
        host=host,
        port=port,
        data_dir=data_dir,
        backend=args.backend,
        region=Region(args.region, args.zones, args.account_id),
        latency=args.latency,
        time_scale=args.time_scale,
        deny=args.deny,
        imds_tokens_required=args.imds_tokens == "required",
        imds_address=args.imds_address,
        node_tls=args.node_tls,
        credentials=credentials,
        request_rates=args.request_rate,
        pending_snapshot_quota=args.pending_snapshot_quota,
        performance_model=args.performance_model,
        credit_time_scale=args.credit_time_scale,
        loopdev_policy=args.loopdev_policy,
        metrics_interval=args.metrics_interval,
    )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(config)
    except (BackendError, ServeError) as failure:
        raise CliError(str(failure)) from None


def _check_listen(host: str, port: int) -> str:
    """Refuse an address this machine cannot serve on, before anything is created; the
    IP address it resolves to."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise CliError(
            f"--listen: {host!r} is neither an IP address nor a known host name"
        ) from None
    family, kind, protocol, _, address = found[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as failure:
            raise CliError(f"cannot serve on {host}:{port}: {failure.strerror}") from None
    return str(address[0])
