"""`docker volume create -o` options, the plugin's defaults, volume names, and the tags
that carry options from Create to a later Mount."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fakestor.control.rules import VOLUME_TYPES
from fakestor.plugin import host

NAME_TAG = "Name"
OPTION_TAG_PREFIX = "fakestor:"  # options a later Mount needs travel with the volume
OPTIONS = {
    "size": "size in GiB (default 1)",
    "type": f"EBS volume type: {', '.join(VOLUME_TYPES)}",
    "iops": "provisioned IOPS (gp3, io1, io2)",
    "throughput": "provisioned MiB/s (gp3)",
    "snapshot": "snap-... id to restore from",
    "fstype": "ext4 or xfs (default ext4), used when the volume is first mounted",
    "encrypted": "true or false",
    "uid": "owner of the volume's root directory",
    "gid": "group of the volume's root directory",
    "mode": "octal permissions of the volume's root directory, e.g. 0750",
}
# As Docker's local driver: names that are safe as one path component under the mount root.
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


class PluginError(Exception):
    """A failed volume operation; the message is shown to the Docker user as is."""


def check_name(name: str) -> None:
    """Refuse names that are not one safe path component (`..`, `a/b`, `.x`)."""
    if not VOLUME_NAME.fullmatch(name):
        raise PluginError(
            f"volume name {name!r} is not valid: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )


@dataclass(frozen=True)
class Defaults:
    size: int = 1
    volume_type: str = "gp3"
    fstype: str = "ext4"


def _integer(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]+", value):
        raise PluginError(f"option {name}={value!r} must be a whole number from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise PluginError(f"option {name}={value} is out of range: use {low} to {high}")
    return number


def _boolean(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise PluginError(f"option {name}={value!r} must be true or false")


@dataclass(frozen=True)
class VolumeOptions:
    """`docker volume create -o` options, validated."""

    size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    snapshot: str | None = None
    fstype: str | None = None
    encrypted: bool | None = None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None

    @classmethod
    def parse(cls, options: Mapping[str, str] | None) -> VolumeOptions:
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise PluginError(
                f"unknown option {', '.join(unknown)}; valid options are {', '.join(OPTIONS)}"
            )
        parsed: dict[str, Any] = {}
        if "size" in options:
            parsed["size"] = _integer("size", options["size"], 1, 65536)
        if "type" in options:
            if options["type"] not in VOLUME_TYPES:
                raise PluginError(
                    f"option type={options['type']!r} is not an EBS volume type; use one of "
                    f"{', '.join(VOLUME_TYPES)}"
                )
            parsed["volume_type"] = options["type"]
        if "iops" in options:
            parsed["iops"] = _integer("iops", options["iops"], 100, 256_000)
        if "throughput" in options:
            parsed["throughput"] = _integer("throughput", options["throughput"], 125, 2000)
        if "snapshot" in options:
            if not re.fullmatch(r"snap-([0-9a-f]{8}|[0-9a-f]{17})", options["snapshot"]):
                raise PluginError(
                    f"option snapshot={options['snapshot']!r} is not a snapshot id "
                    "(snap-0123456789abcdef0)"
                )
            parsed["snapshot"] = options["snapshot"]
        if "fstype" in options:
            if options["fstype"] not in host.FILESYSTEMS:
                raise PluginError(
                    f"option fstype={options['fstype']!r} is not supported; use "
                    f"{' or '.join(host.FILESYSTEMS)}"
                )
            parsed["fstype"] = options["fstype"]
        if "encrypted" in options:
            parsed["encrypted"] = _boolean("encrypted", options["encrypted"])
        for name in ("uid", "gid"):
            if name in options:
                parsed[name] = _integer(name, options[name], 0, 2**32 - 2)
        if "mode" in options:
            if not re.fullmatch(r"0?[0-7]{3,4}", options["mode"]):
                raise PluginError(
                    f"option mode={options['mode']!r} must be octal permissions such as 0755"
                )
            parsed["mode"] = int(options["mode"], 8)
        return cls(**parsed)


def options_of(volume: Mapping[str, Any]) -> dict[str, str]:
    """The options Create recorded in the EBS volume's tags."""
    return {
        tag["Key"].removeprefix(OPTION_TAG_PREFIX): tag["Value"]
        for tag in volume.get("Tags", [])
        if tag["Key"].startswith(OPTION_TAG_PREFIX)
    }


def creation_request(
    name: str, options: VolumeOptions, defaults: Defaults, zone: str
) -> dict[str, Any]:
    """CreateVolume's parameters for a Docker volume `name` with `options`."""
    tags = [{"Key": NAME_TAG, "Value": name}]
    tags.append({"Key": OPTION_TAG_PREFIX + "fstype", "Value": options.fstype or defaults.fstype})
    for key in ("uid", "gid"):
        value = getattr(options, key)
        if value is not None:
            tags.append({"Key": OPTION_TAG_PREFIX + key, "Value": str(value)})
    if options.mode is not None:
        tags.append({"Key": OPTION_TAG_PREFIX + "mode", "Value": f"{options.mode:04o}"})
    request: dict[str, Any] = {
        "AvailabilityZone": zone,
        "VolumeType": options.volume_type or defaults.volume_type,
        "TagSpecifications": [{"ResourceType": "volume", "Tags": tags}],
    }
    if options.snapshot:
        request["SnapshotId"] = options.snapshot
        if options.size is not None:
            request["Size"] = options.size
    else:
        request["Size"] = options.size or defaults.size
    for key, field_name in (
        ("Iops", "iops"), ("Throughput", "throughput"), ("Encrypted", "encrypted"),
    ):  # fmt: skip
        value = getattr(options, field_name)
        if value is not None:
            request[key] = value
    return request
