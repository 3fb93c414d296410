"""DescribeInstanceTypes through boto3: the published EBS figures, filters, paging, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fakestor import errors
from fakestor.control import instance_types
from fakestor.control.resources import Attachment, Instance
from fakestor.control.states import AttachmentState, InstanceState
from tests.conftest import ZONE, fast_waiter

# Spot checks against AWS's "Amazon EBS-optimized instance types" table (ebs-optimized.md,
# 2023-05-11): baseline/maximum Mbps, MB/s and IOPS as printed there, and the hardware
# tables' vCPUs and memory.
PUBLISHED = {
    "t3.nano": (2, 512, (43, 2085, 5.38, 260.62, 250, 11800)),
    "m5.large": (2, 8192, (650, 4750, 81.25, 593.75, 3600, 18750)),
    "m6i.24xlarge": (96, 393216, (30000, 30000, 3750.0, 3750.0, 120000, 120000)),
    "m7g.medium": (1, 4096, (315, 10000, 39.38, 1250.0, 2500, 40000)),
    "c5.9xlarge": (36, 73728, (9500, 9500, 1187.5, 1187.5, 40000, 40000)),
    "r5.2xlarge": (8, 65536, (2300, 4750, 287.5, 593.75, 12000, 18750)),
}
FAMILIES = ("t3", "m5", "m6i", "m7g", "c5", "r5")


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def _names(ec2: Any, **kwargs: Any) -> list[str]:
    return [t["InstanceType"] for t in ec2.describe_instance_types(**kwargs)["InstanceTypes"]]


def test_published_figures_come_back_for_spot_checked_types(ec2: Any) -> None:
    found = ec2.describe_instance_types(InstanceTypes=list(PUBLISHED))["InstanceTypes"]
    assert sorted(t["InstanceType"] for t in found) == sorted(PUBLISHED)
    for info in found:
        vcpus, memory_mib, ebs = PUBLISHED[info["InstanceType"]]
        assert info["VCpuInfo"]["DefaultVCpus"] == vcpus
        assert info["MemoryInfo"]["SizeInMiB"] == memory_mib
        optimized = info["EbsInfo"]["EbsOptimizedInfo"]
        assert (
            optimized["BaselineBandwidthInMbps"],
            optimized["MaximumBandwidthInMbps"],
            optimized["BaselineThroughputInMBps"],
            optimized["MaximumThroughputInMBps"],
            optimized["BaselineIops"],
            optimized["MaximumIops"],
        ) == ebs, info["InstanceType"]
        assert info["EbsInfo"]["EbsOptimizedSupport"] == "default"
        assert info["EbsInfo"]["EncryptionSupport"] == "supported"
        assert info["EbsInfo"]["NvmeSupport"] == "required"
        assert info["EbsInfo"]["MaximumEbsAttachments"] == 27
        assert info["EbsInfo"]["AttachmentLimitType"] == "shared"
        assert info["Hypervisor"] == "nitro"
        assert info["BareMetal"] is False


def test_processor_and_bare_metal(ec2: Any) -> None:
    found = ec2.describe_instance_types(InstanceTypes=["m7g.large", "r5.metal", "t3.micro"])
    by_name = {t["InstanceType"]: t for t in found["InstanceTypes"]}
    assert by_name["m7g.large"]["ProcessorInfo"]["SupportedArchitectures"] == ["arm64"]
    assert by_name["t3.micro"]["ProcessorInfo"]["SupportedArchitectures"] == ["x86_64"]
    assert by_name["t3.micro"]["BurstablePerformanceSupported"] is True
    metal = by_name["r5.metal"]
    assert metal["BareMetal"] is True
    assert "Hypervisor" not in metal
    assert metal["EbsInfo"]["MaximumEbsAttachments"] == 31


def test_all_types_of_the_required_families_are_offered(ec2: Any) -> None:
    names = _names(ec2)
    assert len(names) == len(set(names)) == len(instance_types.INSTANCE_TYPES)
    for family in FAMILIES:
        assert sum(n.startswith(family + ".") for n in names) >= 3, family
    assert "m5.large" in names  # the host instance's type


def test_throughput_is_the_bandwidth_in_bytes() -> None:
    """A transcription check on the table: MB/s is Mbps / 8, as printed (two decimals)."""
    for item in instance_types.INSTANCE_TYPES.values():
        ebs = item.ebs
        assert abs(ebs.baseline_throughput_mbps - ebs.baseline_bandwidth_mbps / 8) < 0.01
        assert abs(ebs.maximum_throughput_mbps - ebs.maximum_bandwidth_mbps / 8) < 0.01
        assert ebs.baseline_iops <= ebs.maximum_iops, item.name


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([{"Name": "instance-type", "Values": ["t3.*"]}], {f"t3.{s}" for s in
          ("nano", "micro", "small", "medium", "large", "xlarge", "2xlarge")}),
        ([{"Name": "processor-info.supported-architecture", "Values": ["arm64"]}],
         {n for n in instance_types.INSTANCE_TYPES if n.startswith("m7g.")}),
        ([{"Name": "bare-metal", "Values": ["true"]}],
         {"m5.metal", "m6i.metal", "m7g.metal", "c5.metal", "r5.metal"}),
        ([{"Name": "ebs-info.ebs-optimized-info.maximum-iops", "Values": ["160000"]}],
         {"m6i.32xlarge", "m6i.metal"}),
        ([{"Name": "ebs-info.ebs-optimized-info.baseline-throughput-in-mbps", "Values": ["850"]}],
         {"m5.8xlarge", "r5.8xlarge"}),
        ([{"Name": "vcpu-info.default-vcpus", "Values": ["2"]},
          {"Name": "memory-info.size-in-mib", "Values": ["4096"]}],
         {"t3.medium", "c5.large"}),
        ([{"Name": "ebs-info.maximum-ebs-attachments", "Values": ["27"]},
          {"Name": "instance-type", "Values": ["c5.*"]}],
         {n for n in instance_types.INSTANCE_TYPES if n.startswith("c5.") and n != "c5.metal"}),
        # Not in the published tables: matches nothing rather than something invented.
        ([{"Name": "network-info.maximum-network-interfaces", "Values": ["*"]}], set()),
    ],
)  # fmt: skip
def test_filters(ec2: Any, filters: list[dict[str, Any]], expected: set[str]) -> None:
    assert set(_names(ec2, Filters=filters)) == expected


def test_an_undocumented_filter_is_refused(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instance_types(Filters=[{"Name": "volume-type", "Values": ["gp3"]}])
    assert _error(excinfo)[0] == "InvalidParameterValue"


def test_paging_visits_every_type_once(ec2: Any) -> None:
    seen: list[str] = []
    token = None
    while True:
        page = ec2.describe_instance_types(MaxResults=5, **({"NextToken": token} if token else {}))
        assert len(page["InstanceTypes"]) <= 5
        seen += [t["InstanceType"] for t in page["InstanceTypes"]]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(seen) == sorted(instance_types.INSTANCE_TYPES)
    paginator = ec2.get_paginator("describe_instance_types")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 20}))
    assert [len(p["InstanceTypes"]) for p in pages] == [20, 20, len(seen) - 40]


@pytest.mark.parametrize("max_results", [101, 1000])  # botocore itself refuses below 5
def test_max_results_out_of_range(ec2: Any, max_results: int) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instance_types(MaxResults=max_results)
    assert _error(excinfo)[0] == "InvalidParameterValue"


def test_unknown_types_get_ec2s_error(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instance_types(InstanceTypes=["m5.large", "m5.huge", "t3.gigantic"])
    assert _error(excinfo) == (
        "InvalidInstanceType",
        "The following supplied instance types do not exist: [m5.huge, t3.gigantic]",
    )


def test_dry_run(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.describe_instance_types(DryRun=True)
    assert _error(excinfo)[0] == "DryRunOperation"


def test_run_instances_keeps_its_type_and_refuses_one_ec2_does_not_offer(ec2: Any) -> None:
    reservation = ec2.run_instances(
        ImageId="ami-00000000000000001", MinCount=1, MaxCount=1, InstanceType="t3.nano"
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    assert reservation["Instances"][0]["InstanceType"] == "t3.nano"
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    assert described["Instances"][0]["InstanceType"] == "t3.nano"
    ec2.terminate_instances(InstanceIds=[instance_id])
    for bad in ("t3.gigantic", "m5.large "):
        with pytest.raises(ClientError) as excinfo:
            ec2.run_instances(
                ImageId="ami-00000000000000001", MinCount=1, MaxCount=1, InstanceType=bad
            )
        assert _error(excinfo) == (
            "InvalidParameterValue",
            f"Invalid value '{bad}' for InstanceType.",
        )


def test_attach_volume_stops_at_the_instance_types_limit(ec2: Any) -> None:
    """A t3.nano takes 27 EBS volumes: 28 shared attachments less its network interface."""
    reservation = ec2.run_instances(
        ImageId="ami-00000000000000001",
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.nano",
        Placement={"AvailabilityZone": ZONE},
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance_id])
    limit = ec2.describe_instance_types(InstanceTypes=["t3.nano"])["InstanceTypes"][0]["EbsInfo"][
        "MaximumEbsAttachments"
    ]
    assert limit == 27
    volumes = [
        ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"] for _ in range(limit + 1)
    ]
    fast_waiter(ec2, "volume_available")(VolumeIds=volumes)
    # /dev/xvdba ... /dev/xvdcb: enough distinct device names.
    devices = [f"/dev/xvd{a}{b}" for a in "bc" for b in "abcdefghijklmnopqrstuvwxyz"]
    for volume_id, device in zip(volumes[:limit], devices, strict=False):
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)

    extra = volumes[limit]
    with pytest.raises(ClientError) as excinfo:
        ec2.attach_volume(VolumeId=extra, InstanceId=instance_id, Device=devices[limit])
    code, message = _error(excinfo)
    assert code == "AttachmentLimitExceeded"
    assert message.startswith(
        "You may attach up to 27 devices for this instance type. Please use a larger "
        "instance size to attach more volumes."
    )
    assert ec2.describe_volumes(VolumeIds=[extra])["Volumes"][0]["State"] == "available"
    assert ec2.describe_volumes(VolumeIds=[extra])["Volumes"][0]["Attachments"] == []

    # Once a volume is detached, its slot is free again.
    ec2.detach_volume(VolumeId=volumes[0])
    fast_waiter(ec2, "volume_available")(VolumeIds=[volumes[0]])
    ec2.attach_volume(VolumeId=extra, InstanceId=instance_id, Device=devices[limit])
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[extra])
    ec2.terminate_instances(InstanceIds=[instance_id])
    fast_waiter(ec2, "volume_available")(VolumeIds=volumes[1:])
    for volume_id in volumes:
        ec2.delete_volume(VolumeId=volume_id)


def _instance_with(instance_type: str, states: list[AttachmentState]) -> Instance:
    now = datetime.now(UTC)
    return Instance(
        id="i-00000000000000001",
        zone=ZONE,
        state=InstanceState.RUNNING,
        instance_type=instance_type,
        image_id="ami-00000000000000001",
        launch_time=now,
        is_host=False,
        attachments=[
            Attachment(f"vol-{n:017x}", "i-00000000000000001", f"/dev/xvdb{n}", state, now)
            for n, state in enumerate(states)
        ],
    )


def test_attachments_in_every_state_hold_their_slot() -> None:
    states = [AttachmentState.ATTACHING, AttachmentState.DETACHING] + [
        AttachmentState.ATTACHED
    ] * 25
    instance_types.check_attachment_limit(_instance_with("m5.large", states[:-1]))
    with pytest.raises(errors.AttachmentLimitExceeded):
        instance_types.check_attachment_limit(_instance_with("m5.large", states))
    # Bare metal takes 31; a type recorded before types were checked has no limit.
    instance_types.check_attachment_limit(_instance_with("m5.metal", states + states[:3]))
    instance_types.check_attachment_limit(_instance_with("t2.micro", states * 2))
