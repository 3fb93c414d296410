"""Run the benchmarks and record them in BENCHMARKS.md.

python -m benchmarks [--quick] [--runs N] [--work-dir DIR] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks import datapath, loopdev
from benchmarks.common import write_section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and counts (smoke)")
    parser.add_argument("--runs", type=int, default=None, help="repetitions per figure")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("/var/tmp"), help="where images are made"
    )
    parser.add_argument("--no-record", action="store_true", help="print, do not edit BENCHMARKS.md")
    parser.add_argument(
        "--only", action="append", choices=("loopdev", "datapath"), help="run only this section"
    )
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    if os.geteuid() != 0:
        print("benchmarks: the loopdev figures need root (loop devices)", file=sys.stderr)
        return 1
    parser_sections = args.only or ["loopdev", "datapath"]
    if "loopdev" in parser_sections:
        _loopdev(args, runs)
    if "datapath" in parser_sections:
        _datapath(args, 1 if args.quick else min(runs, 3))
    return 0


def _datapath(args: argparse.Namespace, runs: int) -> None:
    results = datapath.measure(args.work_dir, args.quick, runs)
    body = (
        "## Data path: fio on ext4 on a fakestor volume, per backend, vs a plain file\n\n"
        f"Command: `python -m benchmarks --only datapath` ({runs} runs of each job; median "
        "MiB/s, min-max, and the ratio to the plain file). fio with direct I/O, libaio, "
        "queue depth 16, on a file in an ext4 filesystem made on an attached 8 GiB volume; "
        "the plain file is on the data dir's own filesystem.\n\n" + datapath.summary(results)
    )
    print(body)
    if not args.no_record:
        write_section("datapath", body)


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
        write_section("loopdev", body)


if __name__ == "__main__":
    raise SystemExit(main())
