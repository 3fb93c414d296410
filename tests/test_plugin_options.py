"""`docker volume create -o` options, parsed without Docker."""

from __future__ import annotations

import pytest

from fakestor.plugin.options import OPTIONS, PluginError, VolumeOptions


def test_every_option_parses() -> None:
    parsed = VolumeOptions.parse(
        {
            "size": "8", "type": "io2", "iops": "4000", "throughput": "250",
            "snapshot": "snap-0123456789abcdef0", "fstype": "xfs", "encrypted": "yes",
            "uid": "1000", "gid": "0", "mode": "750",
        }
    )  # fmt: skip
    assert parsed == VolumeOptions(
        size=8, volume_type="io2", iops=4000, throughput=250,
        snapshot="snap-0123456789abcdef0", fstype="xfs", encrypted=True,
        uid=1000, gid=0, mode=0o750,
    )  # fmt: skip
    assert VolumeOptions.parse(None) == VolumeOptions()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"colour": "red"}, "valid options are " + ", ".join(OPTIONS)),
        ({"size": "\uff11"}, "whole number"),  # a fullwidth digit one
        ({"size": "65537"}, "out of range"),
        ({"mode": "0999"}, "octal"),
        ({"encrypted": ""}, "true or false"),
        ({"snapshot": "snap-0123456789ABCDEF0"}, "snapshot id"),
    ],
)
def test_bad_options_say_what_to_do(options: dict[str, str], words: str) -> None:
    with pytest.raises(PluginError, match=words):
        VolumeOptions.parse(options)
