"""How EC2 and Linux name an EBS volume's device: one source for every part of fakestor.

The name an AttachVolume asks for (/dev/sdf), what a Xen guest shows (/dev/xvdf),
and the link udev makes on a Nitro instance
(/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc...).
"""

from __future__ import annotations

import re
from pathlib import Path

BY_ID_DIR = Path("/dev/disk/by-id")
BY_ID_PREFIX = "nvme-Amazon_Elastic_Block_Store_"

# Device names EC2 accepts for EBS data volumes: /dev/sd[b-z] and /dev/xvd[b-z] on
# Linux (a trailing partition number or second letter allowed), xvd[b-z] on Windows.
DEVICE_NAME = re.compile(r"(/dev/sd[b-z][1-9]?|/dev/xvd[b-z][a-z]?|xvd[b-z][a-z]?)", re.ASCII)
DEVICE_NAME_HINT = "use /dev/sd[f-p] (or /dev/xvd[f-p]; xvd[f-p] on Windows)"


def is_device_name(device: str) -> bool:
    """Whether EC2 accepts `device` as the device name of an EBS data volume."""
    return DEVICE_NAME.fullmatch(device) is not None


def by_id_name(volume_id: str) -> str:
    """The by-id link name of a volume, as udev names NVMe EBS devices: vol-0abc -> vol0abc."""
    return BY_ID_PREFIX + volume_id.replace("-", "")


def by_id_path(volume_id: str, by_id_dir: Path = BY_ID_DIR) -> Path:
    """Where a Nitro instance links the volume's NVMe device."""
    return by_id_dir / by_id_name(volume_id)


def canonical_device(device: str) -> str:
    """/dev/sdf, /dev/xvdf and xvdf name the same slot: "sdf"; a guest sees sdf as xvdf."""
    base = device.removeprefix("/dev/")
    return "sd" + base.removeprefix("xvd") if base.startswith("xvd") else base


def device_aliases(device: str) -> list[str]:
    """/dev/sdf -> ["sdf", "xvdf"]: the name asked for and the one a Xen guest shows."""
    base = device.removeprefix("/dev/")
    if base.startswith("sd"):
        return [base, "xv" + base[1:]]
    if base.startswith("xvd"):
        return [base, "s" + base[2:]]
    return [base]
