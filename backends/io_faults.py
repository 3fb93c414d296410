"""Data-plane faults a backend applies to a volume's I/O (the tag `fakestor:fault/io`):
errors on reads or writes in a byte range, added latency, I/O suspended (impaired), or a
device gone from under its users."""

from __future__ import annotations

from dataclasses import dataclass

READ = "read"
WRITE = "write"

# How long impaired I/O blocks before it fails with EIO: the Linux NVMe driver's default
# I/O timeout (nvme_core.io_timeout), after which a real instance sees the error.
IMPAIRED_TIMEOUT = 30.0


@dataclass(frozen=True)
class IoFault:
    """One volume's data-plane fault.

    `errors`: the operations (READ, WRITE) that fail with EIO where they touch bytes
    [start, end) of the device (end None: to the end). `latency`: seconds added before
    each I/O. `impaired`: every I/O blocks until the fault is lifted, or fails with EIO
    after `impaired_timeout` seconds. `gone`: every I/O fails with ENXIO, as on a device
    that has disappeared.
    """

    errors: frozenset[str] = frozenset()
    start: int = 0
    end: int | None = None
    latency: float = 0.0
    impaired: bool = False
    impaired_timeout: float = IMPAIRED_TIMEOUT
    gone: bool = False

    def fails(self, operation: str, offset: int, size: int) -> bool:
        """Whether an I/O of `size` bytes at `offset` meets the faulted range."""
        if operation not in self.errors:
            return False
        last = offset + max(size, 1)
        return last > self.start and (self.end is None or offset < self.end)
