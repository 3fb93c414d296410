"""EBS volume-type rules: sizes, IOPS and throughput as EC2 documents them.

The ranges are the ones botocore's EC2 model documents for CreateVolume and
ModifyVolume (a test reads them back out of the model). The per-GiB and per-IOPS
ratios come from the EBS user guide.

Error messages are EC2's own text, as clients and their users have quoted it, because
clients parse some of them: the AWS EBS CSI driver (pkg/cloud/cloud.go) sends a DryRun
CreateVolume with Iops=2147483647 and reads the type's IOPS ceiling out of
"Volume iops of N is too high; maximum is M.", and treats "parameter iops is not
supported" as a type without provisioned IOPS.
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


# Where each message's wording was seen coming from EC2 (error texts quoted in public
# issue threads and in the EBS CSI driver's tests, 2015-2025):
#   size too small         sodafoundation/strato#1116 ("The volume size is invalid for gp2 ...")
#   size too large         fog/fog-aws#186 ("Volume of 2000GiB is too large for volume type ...")
#   iops too high          kubernetes-sigs/aws-ebs-csi-driver pkg/cloud/cloud_test.go
#   iops not supported     the same, and boto/boto3#2474
#   iops to size ratio     rocicorp/mono#4410 (gp3, "maximum is 500"),
#                          ministryofjustice/cloud-platform-terraform-monitoring#110 (io1)
#   throughput unsupported aws/aws-parallelcluster#3951 (InvalidParameterCombination)
#   throughput/iops ratio  runs-on/runs-on#260
# "too low" for IOPS and throughput, and "Volume throughput of N is too high", were seen
# only in part ("Volume throughput o..."); they follow the IOPS messages' form.


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
    if size < rules.min_size:
        raise errors.InvalidParameterValue(
            f"The volume size is invalid for {volume_type} volumes: {size} GiB. "
            f"{volume_type} volumes must be at least {rules.min_size} GiB in size. "
            "Please specify a volume size above the minimum limit."
        )
    if size > rules.max_size:
        raise errors.InvalidParameterValue(
            f"Volume of {size}GiB is too large for volume type {volume_type}; "
            f"maximum is {rules.max_size}GiB"
        )
    if iops is not None and rules.min_iops is None:
        raise errors.InvalidParameterCombination(
            f"The parameter iops is not supported for {volume_type} volumes."
        )
    if throughput is not None and rules.min_throughput is None:
        raise errors.InvalidParameterCombination(
            f"The throughput parameter is not supported for {volume_type} volumes."
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
    if effective_iops > rules.max_iops:
        raise errors.InvalidParameterValue(
            f"Volume iops of {effective_iops} is too high; maximum is {rules.max_iops}."
        )
    if effective_iops < rules.min_iops:
        raise errors.InvalidParameterValue(
            f"Volume iops of {effective_iops} is too low; minimum is {rules.min_iops}."
        )
    if (
        rules.iops_per_gib is not None
        and effective_iops > rules.min_iops
        and effective_iops > rules.iops_per_gib * size
    ):
        raise errors.InvalidParameterValue(
            f"Iops to volume size ratio of {effective_iops / size:.6f} is too high; "
            f"maximum is {rules.iops_per_gib}"
        )

    effective_throughput: int | None = None
    if rules.min_throughput is not None and rules.max_throughput is not None:
        effective_throughput = throughput if throughput is not None else rules.default_throughput
        assert effective_throughput is not None
        if effective_throughput > rules.max_throughput:
            raise errors.InvalidParameterValue(
                f"Volume throughput of {effective_throughput} is too high; "
                f"maximum is {rules.max_throughput}."
            )
        if effective_throughput < rules.min_throughput:
            raise errors.InvalidParameterValue(
                f"Volume throughput of {effective_throughput} is too low; "
                f"minimum is {rules.min_throughput}."
            )
        if (
            rules.throughput_per_iops is not None
            and effective_throughput > rules.min_throughput
            and effective_throughput > rules.throughput_per_iops * effective_iops
        ):
            raise errors.InvalidParameterValue(
                "Throughput (MiBps) to iops ratio of "
                f"{effective_throughput / effective_iops:.6f} is too high; maximum is "
                f"{rules.throughput_per_iops:.6f} MiBps per iops"
            )
    return Performance(iops=effective_iops, throughput=effective_throughput)
