"""The volume-type table against the ranges botocore's EC2 model documents."""

from __future__ import annotations

import re

import pytest

from fakestor import errors
from fakestor.control import filter_values, instance_types, rules
from fakestor.ec2 import wire


def _documented(operation: str, member: str) -> str:
    shape = wire.operation_model(operation).input_shape
    text = re.sub(r"<[^>]+>", " ", shape.members[member].documentation)
    return re.sub(r"\s+", " ", text).replace(",", "")


def _documented_ranges(operation: str, member: str) -> dict[str, tuple[int, int]]:
    """{"gp3": (1, 65536), ...} read out of the member's documentation."""
    found: dict[str, tuple[int, int]] = {}
    for names, low, high in re.findall(
        r"((?:[a-z0-9]+(?: and )?)+) ?: (\d+) (?:\( default \) )?- (\d+)",
        _documented(operation, member),
    ):
        for name in names.split(" and "):
            found[name.strip()] = (int(low), int(high))
    return found


@pytest.mark.parametrize("operation", ["CreateVolume", "ModifyVolume"])
def test_size_ranges_match_botocore_documentation(operation: str) -> None:
    documented = _documented_ranges(operation, "Size")
    assert set(documented) == set(rules.VOLUME_TYPES)
    for name, (low, high) in documented.items():
        assert (rules.VOLUME_TYPES[name].min_size, rules.VOLUME_TYPES[name].max_size) == (
            low,
            high,
        ), name


@pytest.mark.parametrize("operation", ["CreateVolume", "ModifyVolume"])
def test_iops_ranges_match_botocore_documentation(operation: str) -> None:
    documented = _documented_ranges(operation, "Iops")
    provisioned = {n: r for n, r in rules.VOLUME_TYPES.items() if r.min_iops is not None}
    assert set(documented) == set(provisioned)
    for name, (low, high) in documented.items():
        assert (provisioned[name].min_iops, provisioned[name].max_iops) == (low, high), name


def test_throughput_range_matches_botocore_documentation() -> None:
    text = _documented("CreateVolume", "Throughput")
    low, high = map(int, re.search(r"Valid Range: (\d+) - (\d+)", text).groups())  # type: ignore[union-attr]
    gp3 = rules.VOLUME_TYPES["gp3"]
    assert (gp3.min_throughput, gp3.max_throughput) == (low, high)
    assert [n for n, r in rules.VOLUME_TYPES.items() if r.min_throughput] == ["gp3"]


def test_io1_allows_at_most_50_iops_per_gib() -> None:
    assert rules.check_volume_config("io1", 100, 5000, None).iops == 5000
    with pytest.raises(
        errors.InvalidParameterValue, match=r"ratio of 50\.010000 .* maximum is 50$"
    ):
        rules.check_volume_config("io1", 100, 5001, None)


def test_gp3_defaults_and_gp2_baseline() -> None:
    assert rules.check_volume_config("gp3", 10, None, None) == rules.Performance(3000, 125)
    assert rules.check_volume_config("gp2", 10, None, None).iops == 100
    assert rules.check_volume_config("gp2", 1000, None, None).iops == 3000


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("gp2", 10, 3000, None), errors.InvalidParameterCombination),
        (("st1", 10, None, None), errors.InvalidParameterValue),
        (("gp3", 10, None, 2001), errors.InvalidParameterValue),
        (("gp3", 100, 3000, 1000), errors.InvalidParameterValue),
        (("io2", 10, None, None), errors.MissingParameter),
        (("sc1", 200, None, 200), errors.InvalidParameterCombination),
        (("magnetic", 10, None, None), errors.InvalidParameterValue),
    ],
)
def test_invalid_configurations_are_refused(
    args: tuple[str, int, int | None, int | None], error: type[errors.Ec2Error]
) -> None:
    with pytest.raises(error):
        rules.check_volume_config(*args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("gp2", 0, None, None),
            "The volume size is invalid for gp2 volumes: 0 GiB. gp2 volumes must be at least "
            "1 GiB in size. Please specify a volume size above the minimum limit.",
        ),
        (
            ("standard", 2000, None, None),
            "Volume of 2000GiB is too large for volume type standard; maximum is 1024GiB",
        ),
        (("gp3", 4, 200000, None), "Volume iops of 200000 is too high; maximum is 80000."),
        (("io1", 4, 200000, None), "Volume iops of 200000 is too high; maximum is 64000."),
        (("io2", 4, 300000, None), "Volume iops of 300000 is too high; maximum is 256000."),
        (
            ("gp3", 20, 15000, None),
            "Iops to volume size ratio of 750.000000 is too high; maximum is 500",
        ),
        (("gp2", 10, 3000, None), "The parameter iops is not supported for gp2 volumes."),
        (("gp2", 10, None, 300), "The throughput parameter is not supported for gp2 volumes."),
        (
            ("gp3", 100, 3000, 1000),
            "Throughput (MiBps) to iops ratio of 0.333333 is too high; maximum is 0.250000 "
            "MiBps per iops",
        ),
    ],
)
def test_messages_use_ec2_wording(
    args: tuple[str, int, int | None, int | None], message: str
) -> None:
    """EC2's own texts, as quoted from real responses (sources in rules.py)."""
    with pytest.raises(errors.Ec2Error) as excinfo:
        rules.check_volume_config(*args)
    assert excinfo.value.message == message


@pytest.mark.parametrize(
    ("operation", "ours"),
    [
        ("DescribeVolumes", filter_values.VOLUME_FILTERS),
        ("DescribeVolumeStatus", filter_values.VOLUME_STATUS_FILTERS),
        ("DescribeSnapshots", filter_values.SNAPSHOT_FILTERS),
        ("DescribeInstanceTypes", instance_types.INSTANCE_TYPE_FILTERS),
    ],
)
def test_filter_names_match_botocore_documentation(operation: str, ours: tuple[str, ...]) -> None:
    """Every filter name EC2 documents is accepted, and none it does not."""
    text = wire.operation_model(operation).input_shape.members["Filters"].documentation
    documented = set(re.findall(r"<code>([a-z][a-zA-Z0-9.\-]*)</code>\s*-", text))
    if "tag-key" in documented:
        documented.add("tag-value")  # in EC2's older references, still accepted
    assert set(ours) == documented
