"""Named pauses for crash tests: FAKESTOR_FAILPOINTS="loopdev.attach.bound=5,..." .

A test sets the variable on a server it starts, waits until the server sits at
the named point, and kills it there. Unset, every failpoint is a no-op.
"""

from __future__ import annotations

import functools
import logging
import os
import time

log = logging.getLogger(__name__)


@functools.cache
def _configured() -> dict[str, float]:
    points: dict[str, float] = {}
    for item in os.environ.get("FAKESTOR_FAILPOINTS", "").split(","):
        name, _, seconds = item.partition("=")
        if name.strip():
            points[name.strip()] = float(seconds or "0")
    return points


def pause(name: str) -> None:
    """Sleep as long as the failpoint `name` says; log that it was reached."""
    seconds = _configured().get(name)
    if seconds is not None:
        log.warning("failpoint %s reached; pausing %.1fs", name, seconds)
        time.sleep(seconds)
