"""Instance metadata at EC2's own address: 169.254.169.254 on `lo`, port 80, for clients
with the address hard-coded. Only when asked for (`fakestor server --imds-address`), as
root; the address is removed again when the server stops, if the server added it."""

from __future__ import annotations

import ipaddress
import os
import subprocess

EC2_IMDS_ADDRESS = "169.254.169.254"
IMDS_PORT = 80


class ImdsAddressError(Exception):
    """The address cannot be added; the message says why in one line."""


def _has_address(address: str) -> bool:
    shown = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=False
    )
    return f" {address}/" in shown.stdout


def add_to_loopback(address: str) -> bool:
    """Put `address` on `lo`; True if this call added it (and so must remove it)."""
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise ImdsAddressError(f"--imds-address {address!r} is not an IPv4 address") from None
    if os.geteuid() != 0:
        raise ImdsAddressError(
            f"--imds-address needs root to add {address} to the loopback interface"
        )
    if _has_address(address):
        return False
    added = subprocess.run(
        ["ip", "addr", "add", f"{address}/32", "dev", "lo"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if added.returncode != 0:
        raise ImdsAddressError(f"cannot add {address} to lo: {added.stderr.strip()}")
    return True


def remove_from_loopback(address: str) -> None:
    subprocess.run(
        ["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True, check=False
    )
