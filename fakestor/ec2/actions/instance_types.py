"""EC2 action on instance types: DescribeInstanceTypes, shaped as botocore's InstanceTypeInfo."""

from __future__ import annotations

from fakestor.control import instance_types
from fakestor.control.context import Ebs
from fakestor.control.instance_types import InstanceType
from fakestor.ec2.actions.common import (
    Params,
    Result,
    action,
    check_paging,
    dry_run_of,
    filters_of,
    page_of,
)


def instance_type_info(item: InstanceType) -> Result:
    ebs = item.ebs
    return {
        "InstanceType": item.name,
        "CurrentGeneration": True,
        "SupportedRootDeviceTypes": ["ebs"],
        "SupportedVirtualizationTypes": ["hvm"],
        "BareMetal": item.bare_metal,
        "Hypervisor": item.hypervisor,
        "ProcessorInfo": {
            "SupportedArchitectures": [item.architecture],
            "Manufacturer": item.manufacturer,
        },
        "VCpuInfo": {"DefaultVCpus": item.vcpus},
        "MemoryInfo": {"SizeInMiB": item.memory_mib},
        "InstanceStorageSupported": False,
        "EbsInfo": {
            "EbsOptimizedSupport": "default",
            "EncryptionSupport": "supported",
            "EbsOptimizedInfo": {
                "BaselineBandwidthInMbps": ebs.baseline_bandwidth_mbps,
                "BaselineThroughputInMBps": ebs.baseline_throughput_mbps,
                "BaselineIops": ebs.baseline_iops,
                "MaximumBandwidthInMbps": ebs.maximum_bandwidth_mbps,
                "MaximumThroughputInMBps": ebs.maximum_throughput_mbps,
                "MaximumIops": ebs.maximum_iops,
            },
            "NvmeSupport": "required",
            "MaximumEbsAttachments": item.max_ebs_attachments,
            "AttachmentLimitType": item.attachment_limit_type,
        },
        "NetworkInfo": {
            "NetworkPerformance": item.network_performance,
            "EfaSupported": item.efa_supported,
        },
        "BurstablePerformanceSupported": item.burstable,
    }


@action
def describe_instance_types(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeInstanceTypes", params, 5, 100)
    # Every type fakestor offers is offered in every region, so IncludeUnsupportedInRegion
    # changes nothing.
    found = instance_types.describe_instance_types(
        names=params.get("InstanceTypes", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of("DescribeInstanceTypes", params, page_size, found, lambda t: t.name)
    return {"InstanceTypes": [instance_type_info(t) for t in page], "NextToken": token}
