"""Faults of the whole server, where there is no resource to tag: no capacity in a zone or
for a volume type (InsufficientVolumeCapacity), and a rate of Unavailable / InternalError
answers to an action (for SDK retry tests). Kept in the home region's state store."""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass

from fakestor import errors
from fakestor.control.context import Ebs

CAPACITY = "capacity"
ERROR_RATE = "error-rate"
RETRYABLE = ("Unavailable", "InternalError")

FORMS = {
    CAPACITY: "none (scope zone:NAME or type:NAME)",
    ERROR_RATE: "FRACTION or FRACTION:CODE, CODE Unavailable or InternalError (scope "
    "action:NAME, or action:* for every action)",
}

_SCOPE = re.compile(r"(zone|type|action):([A-Za-z0-9*-]+)")
_RATE = re.compile(r"(0(?:\.\d+)?|1(?:\.0+)?)(?::(Unavailable|InternalError))?")


@dataclass(frozen=True)
class ServerFault:
    scope: str  # zone:us-east-1a, type:io2, action:CreateVolume, action:*
    name: str  # capacity, error-rate
    value: str

    def describe(self) -> str:
        return f"{self.scope} {self.name}={self.value}"


def parse(scope: str, name: str, value: str) -> ServerFault:
    """Check a fault's parts; raises ValueError with a message for a user."""
    match = _SCOPE.fullmatch(scope)
    if match is None:
        raise ValueError(f"'{scope}' is not a scope; use zone:NAME, type:NAME or action:NAME")
    if name not in FORMS:
        raise ValueError(f"'{name}' is not a server fault; use {' or '.join(FORMS)}")
    kind = match.group(1)
    if name == CAPACITY and (kind == "action" or value != "none"):
        raise ValueError(f"capacity={value} on {scope}: use capacity={FORMS[CAPACITY]}")
    if name == ERROR_RATE and (kind != "action" or _RATE.fullmatch(value) is None):
        raise ValueError(f"error-rate={value} on {scope}: use error-rate={FORMS[ERROR_RATE]}")
    return ServerFault(scope, name, value)


class _Cache:
    """The faults of each state store in memory: a request checks them without a query.

    A change bumps the store's generation; a reader that queried before a change does not
    keep what it read, so a fault set or cleared is seen by every request after it."""

    def __init__(self) -> None:
        self._faults: dict[int, list[ServerFault]] = {}
        self._generations: dict[int, int] = {}
        self._lock = threading.Lock()

    def get(self, ebs: Ebs) -> list[ServerFault]:
        key = id(ebs.store)
        with self._lock:
            found = self._faults.get(key)
            generation = self._generations.get(key, 0)
        if found is None:
            with ebs.store.transaction() as db:
                rows = db.execute("SELECT * FROM server_faults ORDER BY scope, name").fetchall()
            found = [ServerFault(r["scope"], r["name"], r["value"]) for r in rows]
            with self._lock:
                if self._generations.get(key, 0) == generation:
                    self._faults[key] = found
        return found

    def forget(self, ebs: Ebs) -> None:
        key = id(ebs.store)
        with self._lock:
            self._faults.pop(key, None)
            self._generations[key] = self._generations.get(key, 0) + 1


_cache = _Cache()


def _home(ebs: Ebs) -> Ebs:
    return ebs.regions.home if ebs.regions is not None else ebs


def list_faults(ebs: Ebs) -> list[ServerFault]:
    return list(_cache.get(_home(ebs)))


def set_fault(ebs: Ebs, fault: ServerFault) -> None:
    home = _home(ebs)
    with home.store.transaction() as db:
        db.execute(
            "INSERT INTO server_faults(scope, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT(scope, name) DO UPDATE SET value=excluded.value",
            (fault.scope, fault.name, fault.value),
        )
    _cache.forget(home)


def clear_faults(ebs: Ebs, scope: str, name: str | None = None) -> int:
    """Remove the scope's faults (only `name` if given); returns how many there were."""
    home = _home(ebs)
    with home.store.transaction() as db:
        if name is None:
            cursor = db.execute("DELETE FROM server_faults WHERE scope=?", (scope,))
        else:
            cursor = db.execute("DELETE FROM server_faults WHERE scope=? AND name=?", (scope, name))
    _cache.forget(home)
    return cursor.rowcount


def check_capacity(ebs: Ebs, zone: str, volume_type: str) -> None:
    """InsufficientVolumeCapacity if the zone or the volume type has none."""
    for fault in list_faults(ebs):
        if fault.name == CAPACITY and fault.scope in (f"zone:{zone}", f"type:{volume_type}"):
            # EC2's wording for this error.
            raise errors.InsufficientVolumeCapacity(
                "There is not enough capacity to fulfill your EBS volume provision request. "
                "You can try to provision a different volume type, EBS volume in a different "
                "availability zone, or you can wait and try again later."
            )


def maybe_fail(ebs: Ebs, action: str) -> None:
    """Answer this request with Unavailable or InternalError at the action's error rate."""
    faults = list_faults(ebs)
    if not faults:
        return
    for fault in faults:
        if fault.name != ERROR_RATE or fault.scope not in (f"action:{action}", "action:*"):
            continue
        rate, _, code = fault.value.partition(":")
        if random.random() >= float(rate):
            return
        code = code or random.choice(RETRYABLE)
        note = f" (fakestor fault {fault.describe()})"
        if code == "Unavailable":
            raise errors.Unavailable(
                "The server is overloaded and can't handle the request." + note
            )
        raise errors.InternalError("An internal error has occurred." + note)
