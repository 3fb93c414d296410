"""Named points where crash tests stop or break a server: FAKESTOR_FAILPOINTS="name=what,...".

`what` is seconds to pause there ("loopdev.attach.bound=5": a test waits until the
server sits at the point and kills it), or `raise` to raise InjectedFailure there, an
error nothing expects. Unset, every failpoint is a no-op.
"""

from __future__ import annotations

import functools
import logging
import os
import time

log = logging.getLogger(__name__)


class InjectedFailure(RuntimeError):
    """The unexpected error a `raise` failpoint throws."""


@functools.cache
def _configured() -> dict[str, str]:
    points: dict[str, str] = {}
    for item in os.environ.get("FAKESTOR_FAILPOINTS", "").split(","):
        name, _, what = item.partition("=")
        if name.strip():
            points[name.strip()] = what.strip() or "0"
    return points


def hit(name: str) -> None:
    """Do what the failpoint `name` says (pause or raise); log that it was reached."""
    what = _configured().get(name)
    if what is None:
        return
    if what == "raise":
        log.warning("failpoint %s reached; raising", name)
        raise InjectedFailure(f"failpoint {name}")
    log.warning("failpoint %s reached; pausing %.1fs", name, float(what))
    time.sleep(float(what))
