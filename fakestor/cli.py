"""The `fakestor` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from backends import BACKEND_NAMES, BackendError
from fakestor import fault_cli
from fakestor.control.lifecycle_clock import DEFAULT_TIME_SCALE
from fakestor.control.quotas import DEFAULT_PENDING_SNAPSHOT_QUOTA
from fakestor.control.regions import PARTITION, ec2_regions, zone_letters
from fakestor.control.resources import Region
from fakestor.server import DEFAULT_PORT, ServerConfig, default_data_dir
from fakestor.throttling import RateSpecError, parse_rate


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


def _imds_listen(value: str) -> tuple[str, int]:
    """HOST[:PORT] of instance metadata: port 80 (EC2's) unless given."""
    return _listen(value if ":" in value else f"{value}:80")


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
        "volume (fuse backend)",
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

    mounts = commands.add_parser(
        "mounts", help="the mount tree with each mount's propagation and peer group"
    )
    mounts.add_argument(
        "paths", nargs="*", metavar="PATH", help="show only the mounts holding these"
    )
    mounts.add_argument("--pid", default="self", help="read this process's mount namespace")
    output = mounts.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON for scripts")
    output.add_argument("--svg", type=Path, metavar="FILE", help="draw the tree into an SVG file")

    lab = commands.add_parser("lab", help="guided labs that run on this machine, as root")
    lab.add_argument(
        "topic",
        choices=["propagation", "failover"],
        help="what the lab teaches: mount propagation, or a volume moving between nodes",
    )
    lab.add_argument(
        "--plugin", default="fakestor/ebs:latest", help="the managed plugin for the last step"
    )

    check = commands.add_parser(
        "check", help="verify the fuse backend's block store (with the server stopped)"
    )
    check.add_argument(
        "--data-dir", type=Path, default=None, help=f"the server's data dir ({default_data_dir()})"
    )
    check.add_argument(
        "--repair", action="store_true", help="remove garbage chunks and fix reference counts"
    )

    node = commands.add_parser(
        "node", help="the node agent: devices of this host's instance's volumes, over NBD"
    )
    node.add_argument(
        "--endpoint",
        default=os.environ.get("FAKESTOR_ENDPOINT") or f"http://127.0.0.1:{DEFAULT_PORT}",
        help="the fakestor server (default $FAKESTOR_ENDPOINT, else "
        f"http://127.0.0.1:{DEFAULT_PORT}); its exports listen at the address given here",
    )
    node.add_argument(
        "--instance-id",
        default=os.environ.get("FAKESTOR_INSTANCE_ID") or None,
        help="the instance this node is (default $FAKESTOR_INSTANCE_ID, else a new instance "
        "launched with RunInstances)",
    )
    node.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/var/lib/fakestor-node"),
        help="the agent's state: keys and FUSE mount points (default /var/lib/fakestor-node)",
    )
    node.add_argument(
        "--dev-root",
        type=Path,
        default=Path("/dev"),
        help="where the disk/by-id and fakestor/ links go (default /dev)",
    )
    node.add_argument(
        "--imds-listen",
        type=_imds_listen,
        default=None,
        metavar="HOST[:PORT]",
        help="serve this instance's metadata there (port 80 unless given), e.g. "
        "169.254.169.254 in a node's network namespace (added to lo if no interface has it)",
    )
    node.add_argument(
        "--region", default="us-east-1", help="the region of the instance launched (us-east-1)"
    )
    node.add_argument(
        "--reconnect-seconds",
        type=int,
        default=5,
        help="how long a device's I/O waits for a lost export to come back (default 5)",
    )
    node.add_argument("-v", "--verbose", action="store_true", help="log every change")

    plugin = commands.add_parser("plugin", help="serve the Docker volume plugin on a Unix socket")
    plugin.add_argument(
        "--socket",
        type=Path,
        default=Path("/run/docker/plugins/fakestor.sock"),
        help="where dockerd finds the plugin; the file name is the driver name "
        "(default /run/docker/plugins/fakestor.sock: driver 'fakestor')",
    )
    plugin.add_argument(
        "--endpoint",
        default=os.environ.get("FAKESTOR_ENDPOINT") or f"http://127.0.0.1:{DEFAULT_PORT}",
        help=f"the EC2 endpoint (default $FAKESTOR_ENDPOINT, else http://127.0.0.1:{DEFAULT_PORT})",
    )
    plugin.add_argument(
        "--imds-endpoint",
        default=os.environ.get("FAKESTOR_IMDS_ENDPOINT") or None,
        help="instance metadata endpoint (default: $FAKESTOR_IMDS_ENDPOINT, else "
        "$AWS_EC2_METADATA_SERVICE_ENDPOINT, else --endpoint, since fakestor serves both)",
    )
    plugin.add_argument(
        "--mount-root",
        type=Path,
        default=Path("/var/lib/fakestor-plugin/volumes"),
        help="where volumes are mounted (default /var/lib/fakestor-plugin/volumes)",
    )
    plugin.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/fakestor-plugin/state"),
        help="where the mount reference counts are kept",
    )
    plugin.add_argument(
        "--default-size",
        default=os.environ.get("FAKESTOR_DEFAULT_SIZE") or "1",
        help="GiB when -o size is absent (default $FAKESTOR_DEFAULT_SIZE, else 1)",
    )
    plugin.add_argument(
        "--default-type",
        default=os.environ.get("FAKESTOR_DEFAULT_TYPE") or "gp3",
        help="volume type when -o type is absent (default $FAKESTOR_DEFAULT_TYPE, else gp3)",
    )
    plugin.add_argument(
        "--default-fstype",
        default=os.environ.get("FAKESTOR_DEFAULT_FSTYPE") or "ext4",
        help="ext4 or xfs, when -o fstype is absent (default $FAKESTOR_DEFAULT_FSTYPE, else ext4)",
    )
    plugin.add_argument("-v", "--verbose", action="store_true", help="log every operation")
    fault_cli.add_parser(commands, f"http://127.0.0.1:{DEFAULT_PORT}")
    return parser


def _run_server(args: argparse.Namespace) -> None:
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


def _run_plugin(args: argparse.Namespace) -> None:
    from fakestor.control.rules import VOLUME_TYPES
    from fakestor.plugin.driver import Defaults
    from fakestor.plugin.serve import PluginConfig, PluginStartError, run_plugin

    if not str(args.default_size).isdigit() or int(args.default_size) < 1:
        raise CliError(f"--default-size must be a whole number of GiB, not {args.default_size!r}")
    if args.default_fstype not in ("ext4", "xfs"):
        raise CliError(f"--default-fstype must be ext4 or xfs, not {args.default_fstype!r}")
    if args.default_type not in VOLUME_TYPES:
        raise CliError(f"--default-type must be one of {', '.join(VOLUME_TYPES)}")
    if not args.socket.name.endswith(".sock"):
        raise CliError(
            f"--socket must name a .sock file (dockerd looks for NAME.sock), not {args.socket}"
        )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    imds = (
        args.imds_endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or args.endpoint
    )
    config = PluginConfig(
        socket_path=args.socket,
        endpoint=args.endpoint,
        mount_root=args.mount_root,
        state_dir=args.state_dir,
        imds_endpoint=imds,
        defaults=Defaults(int(args.default_size), args.default_type, args.default_fstype),
    )
    try:
        run_plugin(config)
    except (PluginStartError, OSError) as failure:
        raise CliError(str(failure)) from None


def _run_node(args: argparse.Namespace) -> None:
    from fakestor.node.agent import NodeConfig, NodeStartError, run_node

    if args.reconnect_seconds < 1:
        raise CliError("--reconnect-seconds must be at least 1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = NodeConfig(
        endpoint=args.endpoint,
        instance_id=args.instance_id,
        data_dir=args.data_dir,
        dev_root=args.dev_root,
        imds_listen=args.imds_listen,
        region=args.region,
        reconnect_seconds=args.reconnect_seconds,
    )
    try:
        run_node(config)
    except NodeStartError as failure:
        raise CliError(str(failure)) from None


def _run_check(args: argparse.Namespace) -> int:
    import fcntl

    from backends.fuse.chunks import check_store

    data_dir = args.data_dir or default_data_dir()
    store = data_dir / "fuse"
    if not (store / "blocks.db").exists():
        raise CliError(f"{data_dir} has no fuse block store (fuse/blocks.db)")
    try:
        lock = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CliError(f"a fakestor server is using {data_dir}; stop it first") from None
    except OSError as failure:
        raise CliError(f"cannot use {data_dir}: {failure.strerror}") from None
    try:
        report = check_store(store, repair=args.repair)
    finally:
        os.close(lock)
    for line in report.lines():
        print(line)
    if report.damaged:
        verdict = f"damaged: data of {len(report.lost_chunks)} image(s) is lost"
    elif report.needs_repair:
        verdict = "needs repair (run with --repair)"
    else:
        verdict = "consistent" + (" after repair" if report.repaired and report.lines() else "")
    print(
        f"block store {verdict}: {len(report.orphan_files)} garbage chunk(s), "
        f"{len(report.missing_files)} missing, {len(report.wrong_refcounts)} miscounted"
    )
    return 1 if report.damaged or report.needs_repair else 0


def _run_mounts(args: argparse.Namespace) -> None:
    import json

    from fakestor import mounts
    from fakestor.mounts_svg import render_svg

    if args.pid != "self" and not str(args.pid).isdigit():
        raise CliError(f"--pid takes a process id, not {args.pid!r}")
    try:
        found = mounts.read_mounts(args.pid)
    except OSError as failure:
        raise CliError(
            f"cannot read the mounts of process {args.pid}: {failure.strerror}"
        ) from None
    roots = mounts.select(found, args.paths)
    if args.paths and not roots:
        raise CliError(f"no mount holds {', '.join(args.paths)}")
    if args.json:
        paths = [str(Path(p).absolute()) for p in args.paths]
        print(json.dumps([mounts.describe(root, found, paths) for root in roots], indent=2))
    elif args.svg:
        try:
            paths = [str(Path(p).absolute()) for p in args.paths]
            args.svg.write_text(render_svg(roots, found, f"mounts of process {args.pid}", paths))
        except OSError as failure:
            raise CliError(f"cannot write {args.svg}: {failure.strerror}") from None
        print(f"wrote {args.svg}")
    else:
        paths = [str(Path(p).absolute()) for p in args.paths]
        print(mounts.render_text(roots, found, paths))


def _run_lab(args: argparse.Namespace) -> int:
    from fakestor.lab import LabFailure, run_lab

    if args.topic == "failover":
        return _run_failover_lab()
    try:
        failures = run_lab(args.plugin, out=lambda line: print(line, flush=True))
    except LabFailure as failure:
        raise CliError(str(failure)) from None
    return 1 if failures else 0


def _run_failover_lab() -> int:
    from fakestor.lab_failover import LabFailure, run_failover_lab

    # The managed plugin is built from this checkout (devenv/plugin/build), when it has one.
    build = os.environ.get("FAKESTOR_PLUGIN_BUILD") or str(
        Path(__file__).resolve().parent.parent / "devenv" / "plugin" / "build"
    )
    if not Path(build).exists():
        raise CliError(f"the failover lab needs devenv/plugin/build (not at {build})")
    try:
        failures = run_failover_lab(Path(build), out=lambda line: print(line, flush=True))
    except LabFailure as failure:
        raise CliError(str(failure)) from None
    return 1 if failures else 0


def _run_fault(args: argparse.Namespace) -> None:
    from fakestor.fault_cli import FaultError, run

    try:
        run(args, out=lambda line: print(line, flush=True))
    except FaultError as failure:
        raise CliError(str(failure)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "server":
            _run_server(args)
        elif args.command == "plugin":
            _run_plugin(args)
        elif args.command == "node":
            _run_node(args)
        elif args.command == "check":
            return _run_check(args)
        elif args.command == "mounts":
            _run_mounts(args)
        elif args.command == "lab":
            return _run_lab(args)
        elif args.command == "fault":
            _run_fault(args)
    except CliError as failure:
        print(f"fakestor: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: not an error
        return 0
    return 0
