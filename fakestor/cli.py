"""The `fakestor` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fakestor import fault_cli
from fakestor.cli_common import CliError, imds_listen_address
from fakestor.cli_server import add_server_parser, run_server
from fakestor.server import DEFAULT_PORT, default_data_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fakestor", description="A local stand-in for Amazon EBS."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_server_parser(commands)

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
        type=imds_listen_address,
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

    from backends.fuse.check import check_store

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
            run_server(args)
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
