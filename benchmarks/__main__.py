"""Run the benchmarks and record them in BENCHMARKS.md.

python -m benchmarks [--quick] [--runs N] [--work-dir DIR] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version
from pathlib import Path

from benchmarks import (
    control_plane,
    datapath,
    docker_path,
    ebs_direct,
    failover,
    loopdev,
    nodes,
    scale,
    snapshots,
)
from benchmarks.common import write_section

SECTIONS = (
    "control-plane", "loopdev", "datapath", "snapshots", "scale", "docker", "ebs-direct",
    "nodes", "failover",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and counts (smoke)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions per figure")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/var/tmp"), help="where images are made"
    )
    parser.add_argument("--no-record", action="store_true", help="print, do not edit BENCHMARKS.md")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable)",
    )
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    sections = args.only or list(SECTIONS)
    needs_root = [section for section in sections if section != "control-plane"]
    if needs_root and os.geteuid() != 0:
        print(
            f"benchmarks: {', '.join(needs_root)} need root (loop devices, mounts, dockerd); "
            "control-plane does not",
            file=sys.stderr,
        )
        return 1
    if "control-plane" in sections:
        _control_plane(args, runs)
    if "loopdev" in sections:
        _loopdev(args, runs)
    if "snapshots" in sections:
        _snapshots(args, 1 if args.quick else min(runs, 3))
    if "scale" in sections:
        _scale(args, 1 if args.quick else min(runs, 3))
    if "docker" in sections:
        _docker(args, 1 if args.quick else min(runs, 3))
    if "datapath" in sections:
        _datapath(args, 1 if args.quick else min(runs, 3))
    if "nodes" in sections:
        _nodes(args, 1 if args.quick else min(runs, 3))
    if "ebs-direct" in sections:
        _ebs_direct(args, 1 if args.quick else min(runs, 3))
    if "failover" in sections:
        _failover(args, 1 if args.quick else min(runs, 3))
    return 0


def _control_plane(args: argparse.Namespace, runs: int) -> None:
    counts = control_plane.QUICK if args.quick else control_plane.Counts()
    runs = 1 if args.quick else min(runs, 3)
    results = control_plane.measure(counts, runs)
    body = (
        "## Control plane: fakestor vs moto_server, the same boto3 workload\n\n"
        f"Command: `python -m benchmarks --only control-plane` ({runs} runs of the workload, "
        f"each on fresh servers; median, min-max). {counts.volumes:,} CreateVolume with a "
        f"tag, {counts.describes} DescribeVolumes by 10 ids and by tag filter, a paged "
        f"listing, {counts.snapshots} CreateSnapshot + DescribeSnapshots (polled every 5 ms "
        "until `completed`) + DeleteSnapshot, "
        "DeleteVolume of all; fakestor on the metadata backend (every change an fsync'd "
        f"SQLite transaction), moto {version('moto')} in memory.\n\n"
        + control_plane.summary(results, counts)
    )
    print(body)
    if not args.no_record:
        write_section("control-plane", body)


def _snapshots(args: argparse.Namespace, runs: int) -> None:
    # The 10 GiB volume with more and more data, and a volume ten times
    # larger with the least: cost should follow the data, not the size.
    cases = (
        [(1, 8), (1, 32), (1, 64), (4, 8)]
        if args.quick
        else [(10, 100), (10, 1024), (10, 4096), (100, 100)]
    )
    figures = snapshots.measure_snapshots(args.work_dir, cases, runs)
    body = (
        "## Snapshots: cost against data written, per backend\n\n"
        f"Command: `python -m benchmarks --only snapshots` ({runs} runs; median, min-max). "
        "Each volume has its data written in 16 extents spread over it; CreateSnapshot "
        "until `completed`, and CreateVolume from the snapshot until `available` (restore), "
        "as a boto3 client sees them. By hand a snapshot is `cp --sparse=always` of the "
        "image plus `sync`, and a restore the same copy back from the snapshot image; "
        "ratios are to those. The page cache is dropped before every timed step on both "
        "sides.\n\n" + snapshots.snapshot_summary(figures, cases)
    )
    print(body)
    if not args.no_record:
        write_section("snapshots", body, args.work_dir)


def _scale(args: argparse.Namespace, runs: int) -> None:
    count = 20 if args.quick else 200
    figures = scale.measure(args.work_dir, count, runs)
    body = (
        f"## Scale: {count} volumes (loopdev)\n\n"
        f"Command: `python -m benchmarks --only scale` ({runs} runs; median, min-max). "
        "fakestor: CreateVolume, AttachVolume, DetachVolume and DeleteVolume for every "
        "volume through boto3, each phase timed until DescribeVolumes says all are done. "
        "By hand: a sparse 1 GiB image per volume, `losetup --find --show --direct-io=on` "
        "for each until its device opens, `losetup --detach`, and unlinking the images. "
        "Loop devices are created as needed; leaks are counted after each run. The host "
        "instance takes as many volumes as its type's EBS attachment limit, so both sides "
        "attach and detach in waves of that many; a phase is the sum of its waves. The "
        "floor is as many DescribeVolumes of one volume as there are volumes, sequential, "
        "on the same server and client: what the API's round trips cost before any work.\n\n"
        + scale.summary(figures, count)
    )
    print(body)
    problems = figures.problems(count)
    if problems:
        raise SystemExit(f"benchmarks: the scale run failed: {'; '.join(problems)}")
    if not args.no_record:
        write_section("scale", body, args.work_dir)


def _docker(args: argparse.Namespace, runs: int) -> None:
    figures = docker_path.measure(args.work_dir, args.quick, runs)
    body = (
        "## Docker path: fakestor's plugins vs the local driver on a hand-made loop device\n\n"
        f"Command: `python -m benchmarks --only docker` ({runs} runs; median, min-max; "
        "ratio to the local driver). A dockerd of the benchmark's own. `create + first "
        "run + rm` is `docker volume create` (1 GiB), a first `docker run -v vol:/data` "
        "that writes a file (fakestor: attach, mkfs, mount; local driver: truncate, "
        "`losetup`, `mkfs.ext4` by hand, then `-o type=ext4 -o device=/dev/loopN`) and "
        "`docker volume rm`. fio runs inside a container on an 8 GiB fakestor volume "
        "(image made with mmdebstrap), against fio on the data dir's own filesystem, "
        f"with the jobs of the data-path section, {runs} runs of each job (median MiB/s, "
        "min-max).\n\n" + docker_path.summary(figures)
    )
    print(body)
    if not args.no_record:
        write_section("docker", body, args.work_dir)


def _datapath(args: argparse.Namespace, runs: int) -> None:
    results = datapath.measure(args.work_dir, args.quick, runs)
    body = (
        "## Data path: fio on ext4 on a fakestor volume, per backend, vs a plain file\n\n"
        f"Command: `python -m benchmarks --only datapath` ({runs} runs of each job; median "
        "MiB/s, min-max, and the ratio to the plain file). fio with direct I/O, libaio, "
        "queue depth 16, on a file in an ext4 filesystem made on an attached 8 GiB volume; "
        "the plain file is on the data dir's own filesystem. The policy-layer column is a "
        "loopdev server with `--loopdev-policy always`, no fault and no performance model: "
        "what the layer itself costs.\n\n" + datapath.summary(results)
    )
    print(body)
    if not args.no_record:
        write_section("datapath", body, args.work_dir)


def _nodes(args: argparse.Namespace, runs: int) -> None:
    results = nodes.measure(args.work_dir, args.quick, runs)
    body = (
        "## Nodes: fio through a node's NBD path vs the same volume on the host\n\n"
        f"Command: `python -m benchmarks --only nodes` ({runs} runs of each job; median "
        "MiB/s, IOPS with min-max, mean completion latency, and the IOPS ratio to the "
        "host). One 2 GiB loopdev volume, fio with direct I/O and libaio on its device: "
        "attached to the host instance (a loop device on the image), then to a node on "
        "the same machine (`fakestor node`: nbdfuse and a loop device, nbdkit on the "
        "server, over TCP on loopback), without and with `--node-tls`.\n\n" + nodes.summary(results)
    )
    print(body)
    if not args.no_record:
        write_section("nodes", body, args.work_dir)


def _failover(args: argparse.Namespace, runs: int) -> None:
    figures = failover.measure(args.work_dir, args.quick, runs)
    body = (
        "## Failover: a drained node's task running with its volume on another node\n\n"
        f"Command: `python -m benchmarks --only failover` ({runs} drains each; median, "
        "min-max). A 2-node local cluster (devenv/cluster's: network, mount and UTS "
        "namespaces, a dockerd each, the managed plugin, the node agent over NBD, loopdev "
        "backend) runs a one-task Swarm service; the node running it is drained and the "
        "clock stops when the task runs on the other node and reads every line its "
        "earlier runs wrote to the volume. Beside it, the same service with no volume: "
        "what Swarm's rescheduling costs by itself.\n\n" + failover.summary(figures)
    )
    print(body)
    if not args.no_record:
        write_section("failover", body, args.work_dir)


def _ebs_direct(args: argparse.Namespace, runs: int) -> None:
    sizes = ebs_direct.QUICK if args.quick else ebs_direct.Sizes()
    figures = ebs_direct.measure(args.work_dir, sizes, runs)
    body = (
        "## EBS direct APIs: reading a snapshot, and changed blocks, per backend\n\n"
        f"Command: `python -m benchmarks --only ebs-direct` ({runs} runs; median, min-max; "
        "ratios above 1 mean fakestor took less time). A boto3 `ebs` client with "
        f"{ebs_direct.THREADS} threads writes {sizes.read_mib} MiB into a new "
        f"{sizes.read_volume_gib} GiB snapshot (StartSnapshot, PutSnapshotBlock, "
        "CompleteSnapshot until `completed`), then reads it all back: ListSnapshotBlocks "
        "and GetSnapshotBlock of every block. What a user would do instead: the same "
        "blocks in a local image file, written and read with the same number of threads, "
        "and `dd` of it; the page cache is dropped before every timed read. "
        "ListChangedBlocks: a volume with blocks written spread over it, a snapshot, "
        "every other block rewritten, a second snapshot, then the full listing (all "
        "pages), the page cache dropped before each. moto "
        f"{version('moto')} (in the venv) does the same from snapshots written with its "
        "own StartSnapshot/PutSnapshotBlock, held in memory. loopdev compares the blocks "
        "both images hold by reading them (its cost follows the data written); fuse "
        "compares chunk maps, reading nothing.\n\n" + ebs_direct.summary(figures, sizes)
    )
    print(body)
    if not args.no_record:
        write_section("ebs-direct", body, args.work_dir)


def _loopdev(args: argparse.Namespace, runs: int) -> None:
    size_gib, data_mib = (1, 32) if args.quick else (10, 1024)
    figures = loopdev.measure(args.work_dir, size_gib, data_mib, runs)
    body = (
        "## loopdev: attach and snapshot\n\n"
        f"Command: `python -m benchmarks` ({runs} runs each; median, min-max). "
        "fakestor times are what a boto3 client sees: AttachVolume until the "
        "`/dev/disk/by-id` link opens, CreateSnapshot until DescribeSnapshots says "
        "`completed` (polled every 5 ms).\n\n" + loopdev.summary(figures)
    )
    print(body)
    if not args.no_record:
        write_section("loopdev", body, args.work_dir)


if __name__ == "__main__":
    raise SystemExit(main())
