"""`python -m fakestor.cluster up|down|status|exec|kill`: what devenv/cluster runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fakestor.cluster import ClusterError
from fakestor.cluster.lifecycle import Settings, down, exec_argv, kill, status_lines, up


def _settings(args: argparse.Namespace) -> Settings:
    build = os.environ.get("FAKESTOR_PLUGIN_BUILD")
    return Settings(
        root=args.root,
        prefix=os.environ.get("FAKESTOR_CLUSTER_PREFIX", "fsc"),
        subnet=os.environ.get("FAKESTOR_CLUSTER_SUBNET", "10.231.0"),
        port=int(os.environ.get("FAKESTOR_CLUSTER_PORT", "8774")),
        backend=args.backend,
        plugin_build=Path(build) if build else None,
        python=sys.executable,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devenv/cluster", description="N fakestor nodes on this machine, in a Docker Swarm."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("FAKESTOR_CLUSTER_DIR", "/var/lib/fakestor-cluster")),
        help="where the cluster keeps its record, server data and node state",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser("up", help="bring the cluster up")
    start.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    start.add_argument(
        "--backend", choices=("loopdev", "fuse"), default="loopdev", help="the server's backend"
    )
    commands.add_parser("down", help="take it down and leave the machine as it was")
    commands.add_parser("status", help="the endpoint, then a line per node")
    run = commands.add_parser("exec", help="run a command on node N, in its namespaces")
    run.add_argument("node", type=int)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND")
    lose = commands.add_parser("kill", help="lose node N without warning (SIGKILL all of it)")
    lose.add_argument("node", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    say = lambda line: print(f"==> {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if os.geteuid() != 0:
            raise ClusterError("the cluster needs root (namespaces, bridges, loop devices)")
        if args.command == "up":
            up(_settings(args), args.nodes, say)
            for line in status_lines(args.root):
                print(line)
        elif args.command == "down":
            down(args.root, say)
        elif args.command == "status":
            for line in status_lines(args.root):
                print(line)
        elif args.command == "exec":
            argv_, env = exec_argv(args.root, args.node, args.argv)
            os.execvpe(argv_[0], argv_, env)
        elif args.command == "kill":
            kill(args.root, args.node)
    except ClusterError as failure:
        print(f"devenv/cluster: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
