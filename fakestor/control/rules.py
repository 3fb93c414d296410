"""EBS volume-type rules: sizes, IOPS and throughput as EC2 documents them.

The ranges are the ones botocore's EC2 model documents for CreateVolume and
ModifyVolume (a test reads them back out of the model). The per-GiB and per-IOPS
ratios come from the EBS user guide.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakestor import errors


@dataclass(frozen=True)
class VolumeTypeRules:
    name: str
    min_size: int
    max_size: int
    # None: the type has no provisioned IOPS (the parameter is refused).
    min_iops: int | None = None
    max_iops: int | None = None
    default_iops: int | None = None
    iops_per_gib: int | None = None
    iops_required: bool = False
    # None: the type has no provisioned throughput.
    min_throughput: int | None = None
    max_throughput: int | None = None
    default_throughput: int | None = None
    throughput_per_iops: float | None = None
    multi_attach: bool = False


VOLUME_TYPES: dict[str, VolumeTypeRules] = {
    rules.name: rules
    for rules in (
        VolumeTypeRules("gp2", 1, 16_384),
        VolumeTypeRules(
            "gp3",
            1,
            65_536,
            min_iops=3_000,
            max_iops=80_000,
            default_iops=3_000,
            iops_per_gib=500,
            min_throughput=125,
            max_throughput=2_000,
            default_throughput=125,
            throughput_per_iops=0.25,
        ),
        VolumeTypeRules(
            "io1",
            4,
            16_384,
            min_iops=100,
            max_iops=64_000,
            iops_per_gib=50,
            iops_required=True,
            multi_attach=True,
        ),
        VolumeTypeRules(
            "io2",
            4,
            65_536,
            min_iops=100,
            max_iops=256_000,
            iops_per_gib=1_000,
            iops_required=True,
            multi_attach=True,
        ),
        VolumeTypeRules("st1", 125, 16_384),
        VolumeTypeRules("sc1", 125, 16_384),
        VolumeTypeRules("standard", 1, 1_024),
    )
}

DEFAULT_VOLUME_TYPE = "gp2"
MODIFY_DEFAULT_IOPS = 3_000  # ModifyVolume to gp3/io1/io2 without Iops
MAX_MULTI_ATTACH_INSTANCES = 16


def gp2_baseline_iops(size: int) -> int:
    """gp2's burstable baseline: 3 IOPS per GiB, at least 100 and at most 16,000."""
    return min(max(100, 3 * size), 16_000)


def volume_type_rules(volume_type: str) -> VolumeTypeRules:
    try:
        return VOLUME_TYPES[volume_type]
    except KeyError:
        valid = ", ".join(VOLUME_TYPES)
        raise errors.InvalidParameterValue(
            f"Value ({volume_type}) for parameter volumeType is invalid. Valid types: {valid}."
        ) from None


@dataclass(frozen=True)
class Performance:
    """The IOPS and throughput a volume is provisioned with (None where not applicable)."""

    iops: int | None
    throughput: int | None


def check_volume_config(
    volume_type: str,
    size: int,
    iops: int | None,
    throughput: int | None,
    multi_attach: bool = False,
) -> Performance:
    """Validate a volume's type, size, IOPS and throughput; return what it is provisioned with.

    Raises InvalidParameterValue or InvalidParameterCombination as EC2 does.
    """
    rules = volume_type_rules(volume_type)
    if not rules.min_size <= size <= rules.max_size:
        raise errors.InvalidParameterValue(
            f"Volume of {size}GiB is too {'small' if size < rules.min_size else 'large'}; "
            f"{volume_type} volumes must be between {rules.min_size} and "
            f"{rules.max_size} GiB."
        )
    if iops is not None and rules.min_iops is None:
        raise errors.InvalidParameterCombination(
            f"The parameter iops is not supported for {volume_type} volumes."
        )
    if throughput is not None and rules.min_throughput is None:
        raise errors.InvalidParameterCombination(
            f"The parameter throughput is not supported for {volume_type} volumes."
        )
    if multi_attach and not rules.multi_attach:
        raise errors.InvalidParameterCombination(
            f"Multi-Attach is supported only for io1 and io2 volumes, not {volume_type}."
        )
    if rules.iops_required and iops is None:
        raise errors.MissingParameter(f"iops (required for {volume_type} volumes)")

    if rules.min_iops is None or rules.max_iops is None:
        return Performance(
            iops=gp2_baseline_iops(size) if volume_type == "gp2" else None, throughput=None
        )

    effective_iops = iops if iops is not None else rules.default_iops
    assert effective_iops is not None
    if not rules.min_iops <= effective_iops <= rules.max_iops:
        raise errors.InvalidParameterValue(
            f"Volume iops of {effective_iops} is out of range; {volume_type} volumes support "
            f"{rules.min_iops} to {rules.max_iops} IOPS."
        )
    if (
        rules.iops_per_gib is not None
        and effective_iops > rules.min_iops
        and effective_iops > rules.iops_per_gib * size
    ):
        raise errors.InvalidParameterValue(
            f"Iops to volume size ratio of {effective_iops / size:g} is too high; maximum is "
            f"{rules.iops_per_gib} IOPS per GiB for {volume_type} volumes."
        )

    effective_throughput: int | None = None
    if rules.min_throughput is not None and rules.max_throughput is not None:
        effective_throughput = throughput if throughput is not None else rules.default_throughput
        assert effective_throughput is not None
        if not rules.min_throughput <= effective_throughput <= rules.max_throughput:
            raise errors.InvalidParameterValue(
                f"Volume throughput of {effective_throughput} MiB/s is out of range; "
                f"{volume_type} volumes support {rules.min_throughput} to "
                f"{rules.max_throughput} MiB/s."
            )
        if (
            rules.throughput_per_iops is not None
            and effective_throughput > rules.min_throughput
            and effective_throughput > rules.throughput_per_iops * effective_iops
        ):
            raise errors.InvalidParameterValue(
                f"Throughput of {effective_throughput} MiB/s is too high for "
                f"{effective_iops} IOPS; the maximum is {rules.throughput_per_iops} MiB/s "
                f"per provisioned IOPS."
            )
    return Performance(iops=effective_iops, throughput=effective_throughput)
