"""EBS's performance model, enforced on a volume's data path: IOPS and throughput limits
per volume type, gp2's I/O credit bucket and st1/sc1's throughput credit buckets.

Figures from AWS's "Amazon EBS volume types" page:

- gp3: 3,000 IOPS and 125 MiB/s, or what was provisioned.
- gp2: 3 IOPS per GiB (at least 100, at most 16,000). A volume below 3,000 bursts to
  3,000 from a bucket of 5.4 million I/O credits, which starts full and refills at the
  baseline rate. Throughput: 128 MiB/s up to 170 GiB, 250 MiB/s above.
- io1, io2: the provisioned IOPS; throughput 256 KiB/s per IOPS, up to 1,000 MiB/s
  (io1) or 4,000 MiB/s (io2 Block Express).
- st1: 40 MiB/s per TiB baseline, bursting to 250 MiB/s per TiB (500 at most) from a
  bucket of 1 TiB of credit per TiB, at most 500 IOPS.
- sc1: 12 MiB/s per TiB baseline, bursting to 80 MiB/s per TiB (250 at most) from a
  bucket of 1 TiB per TiB, at most 250 IOPS.
- standard: about 100 IOPS on average; bursts of "hundreds" of IOPS are documented
  without a bucket size, so fakestor allows 200 IOPS and 90 MiB/s, flat.

I/O is counted as EBS counts it: on SSD types an I/O of up to 256 KiB is one operation
and a larger one counts once per 256 KiB; on HDD types an I/O counts as at least 1 MiB of
throughput (EBS merges sequential I/O into 1 MiB units; what reaches fakestor's data
path is already merged by the kernel's block layer).

The credit buckets can be made smaller by `credit_scale` (the server's
`--credit-time-scale`), so a test drains gp2's 5.4 million credits in seconds: the
bucket holds 1/credit_scale of EBS's credits and refills at EBS's rate.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

MIB = 1024 * 1024
SSD_UNIT = 256 * 1024
HDD_UNIT = MIB
GP2_BUCKET = 5_400_000  # I/O credits
GP2_BURST_IOPS = 3000
SLACK_SECONDS = 0.05  # how far ahead of its rate a volume may run (a short burst)


@dataclass(frozen=True)
class VolumeShape:
    """What a volume's limits follow from: its type, size and provisioned figures."""

    volume_type: str
    size_gib: int
    iops: int | None = None
    throughput: int | None = None  # MiB/s, gp3


@dataclass(frozen=True)
class Limits:
    baseline_iops: float
    burst_iops: float  # == baseline_iops without an I/O credit bucket
    baseline_mibps: float
    burst_mibps: float  # == baseline_mibps without a throughput credit bucket
    bucket: float  # credits: I/O operations (gp2) or MiB (st1, sc1); 0 without one
    unit_bytes: int  # SSD: 256 KiB per operation; HDD: 1 MiB per I/O at least

    @property
    def hdd(self) -> bool:
        return self.unit_bytes == HDD_UNIT


def limits_of(shape: VolumeShape) -> Limits:
    kind, size = shape.volume_type, shape.size_gib
    tib = size / 1024
    if kind == "gp3":
        iops = float(shape.iops or 3000)
        mibps = float(shape.throughput or 125)
        return Limits(iops, iops, mibps, mibps, 0, SSD_UNIT)
    if kind == "gp2":
        baseline = float(min(max(3 * size, 100), 16000))
        burst = max(baseline, GP2_BURST_IOPS)
        mibps = 128.0 if size <= 170 else 250.0
        return Limits(baseline, burst, mibps, mibps, GP2_BUCKET if burst > baseline else 0,
                      SSD_UNIT)  # fmt: skip
    if kind in ("io1", "io2"):
        iops = float(shape.iops or 100)
        cap = 1000.0 if kind == "io1" else 4000.0
        mibps = min(iops * SSD_UNIT / MIB, cap)
        return Limits(iops, iops, mibps, mibps, 0, SSD_UNIT)
    if kind == "st1":
        return Limits(500, 500, min(40 * tib, 500), min(250 * tib, 500), 1024 * 1024 * tib,
                      HDD_UNIT)  # fmt: skip
    if kind == "sc1":
        return Limits(250, 250, min(12 * tib, 250), min(80 * tib, 250), 1024 * 1024 * tib,
                      HDD_UNIT)  # fmt: skip
    return Limits(200, 200, 90, 90, 0, SSD_UNIT)  # standard (magnetic)


class Shaper:
    """One volume's limits on its data path: `delay()` says how long an I/O must wait.

    Rates are kept as the time each resource (operations, bytes) is next free, as a
    token bucket with a depth of SLACK_SECONDS; a burst bucket's balance is brought up
    to date at each I/O. Thread-safe; the caller sleeps (in its own way) for the delay.
    """

    def __init__(self, shape: VolumeShape, credit_scale: float = 1.0) -> None:
        self._lock = threading.Lock()
        self.credit_scale = credit_scale
        self.shape = shape
        self.limits = limits_of(shape)
        self.capacity = self.limits.bucket / credit_scale
        self.balance = self.capacity
        self._ops_free = 0.0
        self._bytes_free = 0.0
        self._updated = time.monotonic()

    def reshape(self, shape: VolumeShape) -> None:
        """New limits (ModifyVolume); the credit balance is kept, as EBS keeps it."""
        with self._lock:
            self.shape = shape
            self.limits = limits_of(shape)
            self.capacity = self.limits.bucket / self.credit_scale
            self.balance = min(self.balance, self.capacity) if self.capacity else 0.0

    def burst_balance(self) -> float | None:
        """BurstBalance in percent, None for a type without a bucket."""
        with self._lock:
            self._refill(time.monotonic())
            return max(0.0, 100.0 * self.balance / self.capacity) if self.capacity else None

    def _refill(self, now: float) -> None:
        elapsed, self._updated = now - self._updated, now
        if not self.capacity:
            return
        rate = self.limits.baseline_mibps if self.limits.hdd else self.limits.baseline_iops
        self.balance = min(self.capacity, self.balance + rate * elapsed)

    def delay(self, size: int) -> float:
        """Reserve the volume's capacity for an I/O of `size` bytes; seconds to wait first."""
        now = time.monotonic()
        limits = self.limits
        with self._lock:
            self._refill(now)
            if limits.hdd:
                operations = 1.0
                megabytes = max(size, HDD_UNIT) / MIB
            else:
                operations = float(max(1, math.ceil(size / SSD_UNIT)))
                megabytes = size / MIB
            spent = megabytes if limits.hdd else operations
            bursting = self.capacity > 0 and self.balance >= spent
            iops = limits.burst_iops if bursting and not limits.hdd else limits.baseline_iops
            mibps = limits.burst_mibps if bursting and limits.hdd else limits.baseline_mibps
            if self.capacity:
                # Below empty is a debt the refill pays first, so an empty bucket keeps the
                # volume at its baseline rather than granting a burst per refilled credit.
                self.balance -= spent
            start_ops = max(now - SLACK_SECONDS, self._ops_free)
            self._ops_free = start_ops + operations / iops
            start_bytes = max(now - SLACK_SECONDS, self._bytes_free)
            self._bytes_free = start_bytes + megabytes / mibps
            return max(0.0, start_ops - now, start_bytes - now)
