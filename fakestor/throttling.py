"""Request throttling as AWS does it: token buckets per action, refilled at a steady rate,
shared by the EC2 API, the EBS direct APIs and the Recycle Bin. Off unless
`fakestor server --request-rate`.

A rate is written `SERVICE:ACTION=N/s` (or `/m`), optionally `,burst=B`: the bucket holds
B tokens (N unless given), each request takes one, and it refills at N per second. ACTION
may be a glob (`ec2:Describe*`, `ebs:*`). A request takes its token from the rate that
names its action exactly, else from the first glob that matches it; the actions a glob
covers share its one bucket, as EC2's actions share their category's bucket. Buckets are
kept per region, as AWS's quotas are.
"""

from __future__ import annotations

import fnmatch
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_SPEC = re.compile(
    r"^(?P<service>[a-z0-9-]+):(?P<action>[A-Za-z0-9*?\[\]]+)="
    r"(?P<rate>\d+(?:\.\d+)?)/(?P<unit>s|m)(?:,burst=(?P<burst>\d+))?$"
)
_PER_UNIT = {"s": 1.0, "m": 60.0}


class RateSpecError(ValueError):
    """A --request-rate value that cannot be read; the message says what is expected."""


@dataclass(frozen=True)
class RequestRate:
    """One configured rate: `action` (a name or a glob) of `service`."""

    service: str
    action: str
    per_second: float
    burst: float
    spec: str

    @property
    def is_glob(self) -> bool:
        return any(char in self.action for char in "*?[")

    def covers(self, service: str, action: str) -> bool:
        return service == self.service and fnmatch.fnmatchcase(action, self.action)


def parse_rate(spec: str) -> RequestRate:
    """Read `ec2:DescribeVolumes=5/s`, `ebs:*=100/s,burst=200` and the like."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise RateSpecError(
            f"{spec!r} is not a request rate; write SERVICE:ACTION=N/s (or /m), optionally "
            "followed by ,burst=B, for example ec2:DescribeVolumes=5/s or ebs:*=100/s,burst=200"
        )
    per_second = float(match["rate"]) / _PER_UNIT[match["unit"]]
    if per_second <= 0:
        raise RateSpecError(f"{spec!r}: the rate must be above zero")
    burst = float(match["burst"]) if match["burst"] else max(float(match["rate"]), 1.0)
    if burst < 1:
        raise RateSpecError(f"{spec!r}: the burst must be at least 1")
    return RequestRate(match["service"], match["action"], per_second, burst, spec.strip())


class _Bucket:
    def __init__(self, rate: RequestRate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.updated = now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.rate.burst, self.tokens + elapsed * self.rate.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Throttle:
    """The token buckets of every configured rate, per region; thread-safe."""

    def __init__(
        self, rates: Sequence[RequestRate] = (), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = list(rates)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    @classmethod
    def from_specs(cls, specs: Sequence[str]) -> Throttle:
        return cls([parse_rate(spec) for spec in specs])

    def rate_for(self, service: str, action: str) -> RequestRate | None:
        """The rate a request of `action` counts against: its own, else the first glob."""
        exact = [r for r in self.rates if not r.is_glob and r.covers(service, action)]
        globs = [r for r in self.rates if r.is_glob and r.covers(service, action)]
        found = exact or globs
        return found[0] if found else None

    def admit(self, service: str, action: str, region: str) -> bool:
        """Whether a request may go ahead now; False means answer the throttling error."""
        if not self.rates:
            return True
        rate = self.rate_for(service, action)
        if rate is None:
            return True
        now = self._clock()
        with self._lock:
            key = (region, rate.spec)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(rate, now)
            return bucket.take(now)
