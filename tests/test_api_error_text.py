"""Error texts that clients parse, through boto3: they must read as EC2's do."""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ZONE

# Copied from kubernetes-sigs/aws-ebs-csi-driver, pkg/cloud/cloud.go (nonIo2ErrRegex): the
# driver reads a volume type's IOPS ceiling out of the error of a DryRun CreateVolume.
CSI_MAX_IOPS = re.compile(r"(?i)volume iops.*is too high.*maximum is (\d+)")
# Same file: a type without provisioned IOPS is recognised by this text.
CSI_NO_IOPS = "parameter iops is not supported"


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


@pytest.mark.parametrize(
    ("volume_type", "maximum"), [("gp3", 80000), ("io1", 64000), ("io2", 256000)]
)
def test_csi_driver_reads_the_iops_ceiling_from_a_dry_run(
    ec2: Any, volume_type: str, maximum: int
) -> None:
    """The driver's getVolumeLimits request: 4 GiB, Iops=MaxInt32, DryRun, a name tag."""
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(
            AvailabilityZone=ZONE,
            VolumeType=volume_type,
            Size=4,
            Iops=2147483647,
            DryRun=True,
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": "CSIVolumeName", "Value": "IopsLimitDryRun"}],
                }
            ],
        )
    code, message = _error(excinfo)
    assert code == "InvalidParameterValue"
    match = CSI_MAX_IOPS.search(message)
    assert match is not None, message
    assert int(match.group(1)) == maximum


def test_csi_driver_recognises_a_type_without_iops(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(
            AvailabilityZone=ZONE, VolumeType="gp2", Size=4, Iops=2147483647, DryRun=True
        )
    code, message = _error(excinfo)
    assert code == "InvalidParameterCombination"
    assert CSI_NO_IOPS in message


@pytest.mark.parametrize("volume_type", ["gp2", "io1", "st1"])
def test_throughput_on_a_type_without_it_is_a_parameter_combination_error(
    ec2: Any, volume_type: str
) -> None:
    extra = {"Iops": 100} if volume_type == "io1" else {}
    size = 125 if volume_type == "st1" else 10
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(
            AvailabilityZone=ZONE, VolumeType=volume_type, Size=size, Throughput=250, **extra
        )
    assert _error(excinfo) == (
        "InvalidParameterCombination",
        f"The throughput parameter is not supported for {volume_type} volumes.",
    )


def test_size_out_of_range_names_the_type_and_its_limit(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, VolumeType="st1", Size=10)
    assert _error(excinfo) == (
        "InvalidParameterValue",
        "The volume size is invalid for st1 volumes: 10 GiB. st1 volumes must be at least "
        "125 GiB in size. Please specify a volume size above the minimum limit.",
    )
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(AvailabilityZone=ZONE, VolumeType="gp2", Size=16385)
    assert _error(excinfo) == (
        "InvalidParameterValue",
        "Volume of 16385GiB is too large for volume type gp2; maximum is 16384GiB",
    )
