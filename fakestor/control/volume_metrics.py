"""EBS's CloudWatch metrics (namespace AWS/EBS), from the real device counters.

Every `interval` seconds (EBS: 60) a sampler reads /sys/block/<dev>/stat of each volume
attached on this host and records one datapoint per metric: ops, bytes and time from
the counters' deltas, idle time and queue length from io_ticks and time_in_queue, as
AWS's "Amazon EBS metrics" page defines them. As on EBS, a volume has datapoints only
while attached. Datapoints are kept 15 days (CloudWatch keeps 1-minute data that long)
in the region's state store.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fakestor.control.context import Ebs

log = logging.getLogger(__name__)

NAMESPACE = "AWS/EBS"
RETENTION_SECONDS = 15 * 24 * 3600
IO_UNIT_BYTES = 256 * 1024  # io1/io2 count I/O in units of up to 256 KiB
BURSTING_TYPES = ("gp2", "st1", "sc1")
PROVISIONED_TYPES = ("io1", "io2")
STALLED_IDLE_SECONDS = 0.1  # idle time of an interval under which a device was busy all along


# What each metric is measured in; those EBS reports for some volume types only are marked.
UNITS = {
    "VolumeReadOps": "Count",
    "VolumeWriteOps": "Count",
    "VolumeReadBytes": "Bytes",
    "VolumeWriteBytes": "Bytes",
    "VolumeTotalReadTime": "Seconds",
    "VolumeTotalWriteTime": "Seconds",
    "VolumeIdleTime": "Seconds",
    "VolumeQueueLength": "Count",
    "BurstBalance": "Percent",  # gp2, st1, sc1
    "VolumeThroughputPercentage": "Percent",  # io1, io2
    "VolumeConsumedReadWriteOps": "Count",  # io1, io2
}


@dataclass(frozen=True)
class Counters:
    """The fields of /sys/block/<dev>/stat fakestor uses (Documentation/block/stat.rst)."""

    read_ios: int
    read_sectors: int
    read_ticks_ms: int
    write_ios: int
    write_sectors: int
    write_ticks_ms: int
    io_ticks_ms: int
    time_in_queue_ms: int

    @classmethod
    def read(cls, device: str) -> Counters | None:
        name = os.path.basename(os.path.realpath(device))
        try:
            with open(f"/sys/block/{name}/stat") as stat:
                fields = [int(f) for f in stat.read().split()]
        except (OSError, ValueError):
            return None
        return cls(fields[0], fields[2], fields[3], fields[4], fields[6], fields[7], fields[9],
                   fields[10])  # fmt: skip


@dataclass(frozen=True)
class Datapoint:
    metric: str
    sample_count: float
    sum: float
    minimum: float
    maximum: float

    @classmethod
    def single(cls, metric: str, value: float) -> Datapoint:
        return cls(metric, 1, value, value, value)

    @classmethod
    def per_operation(cls, metric: str, total: float, operations: int) -> Datapoint:
        """A sum over operations: SampleCount is the operations, so Average is per operation.
        The counters give no single operation's size or time: Minimum and Maximum are the mean."""
        mean = total / operations if operations else 0.0
        return cls(metric, operations, total, mean, mean)


def datapoints(
    before: Counters,
    after: Counters,
    seconds: float,
    volume_type: str,
    iops: int | None,
    burst_balance: float | None = None,
) -> list[Datapoint]:
    """One interval's datapoints from two readings of a volume's device counters."""
    read_ops = after.read_ios - before.read_ios
    write_ops = after.write_ios - before.write_ios
    read_bytes = (after.read_sectors - before.read_sectors) * 512
    write_bytes = (after.write_sectors - before.write_sectors) * 512
    busy = (after.io_ticks_ms - before.io_ticks_ms) / 1000
    points = [
        Datapoint.single("VolumeReadOps", read_ops),
        Datapoint.single("VolumeWriteOps", write_ops),
        Datapoint.per_operation("VolumeReadBytes", read_bytes, read_ops),
        Datapoint.per_operation("VolumeWriteBytes", write_bytes, write_ops),
        Datapoint.per_operation(
            "VolumeTotalReadTime", (after.read_ticks_ms - before.read_ticks_ms) / 1000, read_ops
        ),
        Datapoint.per_operation(
            "VolumeTotalWriteTime", (after.write_ticks_ms - before.write_ticks_ms) / 1000, write_ops
        ),
        Datapoint.single("VolumeIdleTime", max(0.0, seconds - busy)),
        Datapoint.single(
            "VolumeQueueLength",
            (after.time_in_queue_ms - before.time_in_queue_ms) / 1000 / seconds,
        ),
    ]
    if volume_type in BURSTING_TYPES:
        # Without the performance model on the volume, its bucket never drains.
        balance = 100.0 if burst_balance is None else burst_balance
        points.append(Datapoint.single("BurstBalance", balance))
    if volume_type in PROVISIONED_TYPES and iops:
        consumed = max(read_ops + write_ops, math.ceil((read_bytes + write_bytes) / IO_UNIT_BYTES))
        points.append(Datapoint.single("VolumeConsumedReadWriteOps", consumed))
        delivered = (read_ops + write_ops) / seconds
        points.append(
            Datapoint.single("VolumeThroughputPercentage", min(100.0, 100 * delivered / iops))
        )
    return points


def record(ebs: Ebs, volume_id: str, timestamp: int, points: Iterable[Datapoint]) -> None:
    with ebs.store.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO volume_metrics(volume_id, metric, timestamp, sample_count, "
            "sum, minimum, maximum, unit) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    volume_id,
                    p.metric,
                    timestamp,
                    p.sample_count,
                    p.sum,
                    p.minimum,
                    p.maximum,
                    UNITS[p.metric],
                )
                for p in points
            ],
        )
        db.execute(
            "DELETE FROM volume_metrics WHERE timestamp < ?", (timestamp - RETENTION_SECONDS,)
        )


def io_performance(db: sqlite3.Connection, volume_id: str) -> str | None:
    """DescribeVolumeStatus's `io-performance` of an io1/io2 volume, from its last datapoints:
    whether the data path delivered the provisioned IOPS while I/O was waiting for it.

    EC2 documents the statuses, not their thresholds; fakestor's choice: no I/O waiting
    (queue length below 0.5) or at least 90 % of the provisioned IOPS delivered is `normal`,
    at least 50 % `degraded` (the provisioned rate is above what this machine's path
    sustains), less `severely-degraded`, and a device busy with no I/O done `stalled` (an
    impaired volume).
    None without datapoints (never attached, or not sampled yet).
    """
    rows = db.execute(
        "SELECT metric, sum FROM volume_metrics WHERE volume_id=? AND timestamp=(SELECT "
        "MAX(timestamp) FROM volume_metrics WHERE volume_id=?)",
        (volume_id, volume_id),
    ).fetchall()
    last = {row["metric"]: row["sum"] for row in rows}
    if "VolumeThroughputPercentage" not in last:
        return None
    if last.get("VolumeReadOps", 0.0) + last.get("VolumeWriteOps", 0.0) == 0:
        # The kernel counts a request's time in the queue when it completes, but the
        # device's busy time as it goes: busy all along with nothing done is stalled.
        return "stalled" if last.get("VolumeIdleTime", 1.0) < STALLED_IDLE_SECONDS else "normal"
    if last.get("VolumeQueueLength", 0.0) < 0.5:
        return "normal"
    delivered = last["VolumeThroughputPercentage"]
    return "normal" if delivered >= 90 else "degraded" if delivered >= 50 else "severely-degraded"


class Sampler:
    """Reads the attached volumes' device counters every `interval` seconds, on a thread."""

    def __init__(self, contexts: Callable[[], Iterable[Ebs]], interval: float = 60.0) -> None:
        self.contexts = contexts
        self.interval = interval
        self._last: dict[tuple[str, str], tuple[float, Counters]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="volume-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Datapoints at whole multiples of the interval, as CloudWatch's minutes.
            wait = self.interval - (time.time() % self.interval)
            if self._stop.wait(wait):
                return
            try:
                self.sample(time.time())
            except Exception:  # a sample lost is not worth the server
                log.exception("volume metrics: sampling failed")

    def sample(self, now: float) -> None:
        seen: set[tuple[str, str]] = set()
        for ebs in self.contexts():
            with ebs.store.transaction() as db:
                rows = db.execute(
                    "SELECT a.volume_id, a.device_path, v.volume_type, v.iops FROM attachments a "
                    "JOIN volumes v ON v.id = a.volume_id "
                    "WHERE a.state = 'attached' AND a.device_path IS NOT NULL"
                ).fetchall()
            for row in rows:
                key = (row["volume_id"], os.path.realpath(row["device_path"]))
                counters = Counters.read(row["device_path"])
                if counters is None:
                    continue
                seen.add(key)
                previous = self._last.get(key)
                self._last[key] = (now, counters)
                if previous is None or counters.read_ios < previous[1].read_ios:
                    continue  # first reading of this device (or a new one): a baseline
                seconds = max(now - previous[0], 1e-3)
                points = datapoints(
                    previous[1], counters, seconds, row["volume_type"], row["iops"],
                    ebs.backend.burst_balance(row["volume_id"]),
                )  # fmt: skip
                timestamp = int(now // self.interval * self.interval) - int(self.interval)
                try:
                    record(ebs, row["volume_id"], max(timestamp, 0), points)
                except Exception as failure:
                    log.warning("volume metrics of %s not recorded: %s", row["volume_id"], failure)
        for gone in set(self._last) - seen:
            del self._last[gone]
