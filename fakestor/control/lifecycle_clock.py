"""How long EC2's slow snapshot lifecycle steps take here: each EC2 duration (archival,
restores, fast snapshot restore, lock periods) divided by the server's --time-scale."""

from __future__ import annotations

from datetime import datetime, timedelta

from fakestor.control.resources import from_text, utcnow

DEFAULT_TIME_SCALE = 3600.0  # an EC2 hour takes a second
# No step is shorter than this, so a client polling every few tenths of a second sees it.
SHORTEST_STEP = timedelta(seconds=0.5)


def scaled(duration: timedelta, time_scale: float) -> timedelta:
    """How long `duration` of EC2 time lasts here."""
    return max(duration / time_scale, SHORTEST_STEP)


def due_after(duration: timedelta, time_scale: float) -> datetime:
    """When a step of EC2 duration `duration` that starts now ends here."""
    return utcnow() + scaled(duration, time_scale)


def seconds_until(due_text: str) -> float:
    """Seconds from now until a recorded due time (0 if it has passed)."""
    return max(0.0, (from_text(due_text) - utcnow()).total_seconds())
