"""Instance types: the EC2 types fakestor offers, with the EBS limits AWS publishes for each,
and DescribeInstanceTypes, RunInstances' type check and AttachVolume's attachment limit.

Every figure comes from AWS's own documentation, read from its source repository
(github.com/awsdocs/amazon-ec2-user-guide, doc_source/, commit d289961 of 2023-05-11,
the last change to these pages before the repository was archived in June 2023; the
pages were published under https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/):

- ebs-optimized.html, "Amazon EBS-optimized instance types", "EBS optimized by default":
  EBS bandwidth, throughput and IOPS. Types the table marks with an asterisk burst to the
  maximum; for the others it gives one figure, reported here as both baseline and
  maximum, as EC2 does. Throughput is as printed, to two decimals (t3.nano: 5.38 MB/s).
- general-purpose-instances.html, compute-optimized-instances.html,
  memory-optimized-instances.html: vCPUs and memory ("Hardware specifications"), network
  performance and EFA ("Network performance"), processors (Intel Xeon; AWS Graviton3
  for M7g).
- instance-types.html, "Instances built on the Nitro System": all these types are Nitro
  (virtualized or bare metal), which needs NVMe drivers for EBS and HVM AMIs.
- volume_limits.html, "Instance volume limits" (2023-01-19): Nitro instances share 28
  attachments between network interfaces, EBS volumes and NVMe instance store volumes,
  and every instance has at least one network interface, so an EBS-only instance takes
  27 EBS volumes; most bare metal instances take 31. DescribeInstanceTypes reports just
  these (MaximumEbsAttachments 27 or 31, AttachmentLimitType "shared") for these types,
  as the table kubernetes-sigs/aws-ebs-csi-driver generates from it in every region
  shows (pkg/cloud/limits/volume_limits_table.go, 2026-07).

Not published in those tables, so left out rather than invented: clock speeds, cores and
threads per core, network interface and address counts, and the dedicated-limit types
(M7i, C7i, R7i, ...) whose EBS figures postdate the archived tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fakestor import errors
from fakestor.control.context import check_dry_run
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.resources import Instance

SHARED = "shared"  # the attachment limit type of every type offered here


@dataclass(frozen=True)
class EbsOptimizedInfo:
    """The dedicated EBS bandwidth of a type: Mbps, MB/s (128 KiB I/O), IOPS (16 KiB I/O)."""

    baseline_bandwidth_mbps: int
    maximum_bandwidth_mbps: int
    baseline_throughput_mbps: float
    maximum_throughput_mbps: float
    baseline_iops: int
    maximum_iops: int


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    network_performance: str
    efa_supported: bool
    ebs: EbsOptimizedInfo
    architecture: str
    manufacturer: str
    burstable: bool
    max_ebs_attachments: int
    attachment_limit_type: str = SHARED

    @property
    def bare_metal(self) -> bool:
        return _is_bare_metal(self.name)

    @property
    def hypervisor(self) -> str | None:
        """Nitro for virtualized instances; bare metal has no hypervisor."""
        return None if self.bare_metal else "nitro"


def _is_bare_metal(name: str) -> bool:
    """m5.metal, m7i.metal-24xl."""
    return name.split(".")[1].startswith("metal")


@dataclass(frozen=True)
class _Family:
    architecture: str
    manufacturer: str
    burstable: bool = False


_FAMILIES = {
    "t3": _Family("x86_64", "Intel", burstable=True),
    "m5": _Family("x86_64", "Intel"),
    "m6i": _Family("x86_64", "Intel"),
    "m7g": _Family("arm64", "AWS"),
    "c5": _Family("x86_64", "Intel"),
    "r5": _Family("x86_64", "Intel"),
}

# Nitro's shared limit (28) less the one network interface every instance has.
NITRO_SHARED_EBS_ATTACHMENTS = 27
BARE_METAL_EBS_ATTACHMENTS = 31

# The types the network table marks with EFA.
_EFA = frozenset({"m6i.32xlarge", "m6i.metal", "m7g.16xlarge", "m7g.metal"})

# name, vCPUs, memory (GiB), network performance,
# EBS: (baseline Mbps, maximum Mbps, baseline MB/s, maximum MB/s, baseline IOPS, maximum IOPS)
_TABLE: tuple[tuple[str, int, float, str, tuple[int, int, float, float, int, int]], ...] = (
    ("t3.nano", 2, 0.5, "Up to 5 Gigabit", (43, 2085, 5.38, 260.62, 250, 11800)),
    ("t3.micro", 2, 1, "Up to 5 Gigabit", (87, 2085, 10.88, 260.62, 500, 11800)),
    ("t3.small", 2, 2, "Up to 5 Gigabit", (174, 2085, 21.75, 260.62, 1000, 11800)),
    ("t3.medium", 2, 4, "Up to 5 Gigabit", (347, 2085, 43.38, 260.62, 2000, 11800)),
    ("t3.large", 2, 8, "Up to 5 Gigabit", (695, 2780, 86.88, 347.5, 4000, 15700)),
    ("t3.xlarge", 4, 16, "Up to 5 Gigabit", (695, 2780, 86.88, 347.5, 4000, 15700)),
    ("t3.2xlarge", 8, 32, "Up to 5 Gigabit", (695, 2780, 86.88, 347.5, 4000, 15700)),
    ("m5.large", 2, 8, "Up to 10 Gigabit", (650, 4750, 81.25, 593.75, 3600, 18750)),
    ("m5.xlarge", 4, 16, "Up to 10 Gigabit", (1150, 4750, 143.75, 593.75, 6000, 18750)),
    ("m5.2xlarge", 8, 32, "Up to 10 Gigabit", (2300, 4750, 287.5, 593.75, 12000, 18750)),
    ("m5.4xlarge", 16, 64, "Up to 10 Gigabit", (4750, 4750, 593.75, 593.75, 18750, 18750)),
    ("m5.8xlarge", 32, 128, "10 Gigabit", (6800, 6800, 850.0, 850.0, 30000, 30000)),
    ("m5.12xlarge", 48, 192, "12 Gigabit", (9500, 9500, 1187.5, 1187.5, 40000, 40000)),
    ("m5.16xlarge", 64, 256, "20 Gigabit", (13600, 13600, 1700.0, 1700.0, 60000, 60000)),
    ("m5.24xlarge", 96, 384, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
    ("m5.metal", 96, 384, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
    ("m6i.large", 2, 8, "Up to 12.5 Gigabit", (650, 10000, 81.25, 1250.0, 3600, 40000)),
    ("m6i.xlarge", 4, 16, "Up to 12.5 Gigabit", (1250, 10000, 156.25, 1250.0, 6000, 40000)),
    ("m6i.2xlarge", 8, 32, "Up to 12.5 Gigabit", (2500, 10000, 312.5, 1250.0, 12000, 40000)),
    ("m6i.4xlarge", 16, 64, "Up to 12.5 Gigabit", (5000, 10000, 625.0, 1250.0, 20000, 40000)),
    ("m6i.8xlarge", 32, 128, "12.5 Gigabit", (10000, 10000, 1250.0, 1250.0, 40000, 40000)),
    ("m6i.12xlarge", 48, 192, "18.75 Gigabit", (15000, 15000, 1875.0, 1875.0, 60000, 60000)),
    ("m6i.16xlarge", 64, 256, "25 Gigabit", (20000, 20000, 2500.0, 2500.0, 80000, 80000)),
    ("m6i.24xlarge", 96, 384, "37.5 Gigabit", (30000, 30000, 3750.0, 3750.0, 120000, 120000)),
    ("m6i.32xlarge", 128, 512, "50 Gigabit", (40000, 40000, 5000.0, 5000.0, 160000, 160000)),
    ("m6i.metal", 128, 512, "50 Gigabit", (40000, 40000, 5000.0, 5000.0, 160000, 160000)),
    ("m7g.medium", 1, 4, "Up to 12.5 Gigabit", (315, 10000, 39.38, 1250.0, 2500, 40000)),
    ("m7g.large", 2, 8, "Up to 12.5 Gigabit", (630, 10000, 78.75, 1250.0, 3600, 40000)),
    ("m7g.xlarge", 4, 16, "Up to 12.5 Gigabit", (1250, 10000, 156.25, 1250.0, 6000, 40000)),
    ("m7g.2xlarge", 8, 32, "Up to 15 Gigabit", (2500, 10000, 312.5, 1250.0, 12000, 40000)),
    ("m7g.4xlarge", 16, 64, "Up to 15 Gigabit", (5000, 10000, 625.0, 1250.0, 20000, 40000)),
    ("m7g.8xlarge", 32, 128, "15 Gigabit", (10000, 10000, 1250.0, 1250.0, 40000, 40000)),
    ("m7g.12xlarge", 48, 192, "22.5 Gigabit", (15000, 15000, 1875.0, 1875.0, 60000, 60000)),
    ("m7g.16xlarge", 64, 256, "30 Gigabit", (20000, 20000, 2500.0, 2500.0, 80000, 80000)),
    ("m7g.metal", 64, 256, "30 Gigabit", (20000, 20000, 2500.0, 2500.0, 80000, 80000)),
    ("c5.large", 2, 4, "Up to 10 Gigabit", (650, 4750, 81.25, 593.75, 4000, 20000)),
    ("c5.xlarge", 4, 8, "Up to 10 Gigabit", (1150, 4750, 143.75, 593.75, 6000, 20000)),
    ("c5.2xlarge", 8, 16, "Up to 10 Gigabit", (2300, 4750, 287.5, 593.75, 10000, 20000)),
    ("c5.4xlarge", 16, 32, "Up to 10 Gigabit", (4750, 4750, 593.75, 593.75, 20000, 20000)),
    ("c5.9xlarge", 36, 72, "12 Gigabit", (9500, 9500, 1187.5, 1187.5, 40000, 40000)),
    ("c5.12xlarge", 48, 96, "12 Gigabit", (9500, 9500, 1187.5, 1187.5, 40000, 40000)),
    ("c5.18xlarge", 72, 144, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
    ("c5.24xlarge", 96, 192, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
    ("c5.metal", 96, 192, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
    ("r5.large", 2, 16, "Up to 10 Gigabit", (650, 4750, 81.25, 593.75, 3600, 18750)),
    ("r5.xlarge", 4, 32, "Up to 10 Gigabit", (1150, 4750, 143.75, 593.75, 6000, 18750)),
    ("r5.2xlarge", 8, 64, "Up to 10 Gigabit", (2300, 4750, 287.5, 593.75, 12000, 18750)),
    ("r5.4xlarge", 16, 128, "Up to 10 Gigabit", (4750, 4750, 593.75, 593.75, 18750, 18750)),
    ("r5.8xlarge", 32, 256, "10 Gigabit", (6800, 6800, 850.0, 850.0, 30000, 30000)),
    ("r5.12xlarge", 48, 384, "12 Gigabit", (9500, 9500, 1187.5, 1187.5, 40000, 40000)),
    ("r5.16xlarge", 64, 512, "20 Gigabit", (13600, 13600, 1700.0, 1700.0, 60000, 60000)),
    ("r5.24xlarge", 96, 768, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
    ("r5.metal", 96, 768, "25 Gigabit", (19000, 19000, 2375.0, 2375.0, 80000, 80000)),
)


def _instance_type(
    name: str,
    vcpus: int,
    memory_gib: float,
    network: str,
    ebs: tuple[int, int, float, float, int, int],
) -> InstanceType:
    family = _FAMILIES[name.split(".")[0]]
    return InstanceType(
        name=name,
        vcpus=vcpus,
        memory_mib=round(memory_gib * 1024),
        network_performance=network,
        efa_supported=name in _EFA,
        ebs=EbsOptimizedInfo(*ebs),
        architecture=family.architecture,
        manufacturer=family.manufacturer,
        burstable=family.burstable,
        max_ebs_attachments=(
            BARE_METAL_EBS_ATTACHMENTS if _is_bare_metal(name) else NITRO_SHARED_EBS_ATTACHMENTS
        ),
    )


INSTANCE_TYPES: dict[str, InstanceType] = {row[0]: _instance_type(*row) for row in _TABLE}


def check_launchable(name: str) -> InstanceType:
    """The type RunInstances asked for, or EC2's error for one it does not offer.

    EC2 answers InvalidParameterValue here, not InvalidInstanceType (that code is
    DescribeInstanceTypes'), in the words a user quoted from it in getmoto/moto#1695.
    """
    try:
        return INSTANCE_TYPES[name]
    except KeyError:
        raise errors.InvalidParameterValue(f"Invalid value '{name}' for InstanceType.") from None


def check_attachment_limit(instance: Instance) -> None:
    """Refuse one more EBS volume on an instance whose type has no attachment left.

    Every attachment the instance holds counts, whatever its state: a volume still
    attaching or detaching keeps its slot, as on EC2. The limit reported for a shared
    type already leaves the instance's one network interface its slot; fakestor adds no
    other interfaces and offers no type with instance store volumes. An instance of a
    type outside the table (recorded before types were checked) has no published limit.
    """
    known = INSTANCE_TYPES.get(instance.instance_type)
    if known is None or len(instance.attachments) < known.max_ebs_attachments:
        return
    # EC2's text as far as it has been quoted (aws-ebs-csi-driver PR 2500); the link
    # after "please" is fakestor's.
    raise errors.AttachmentLimitExceeded(
        f"You may attach up to {known.max_ebs_attachments} devices for this instance type. "
        "Please use a larger instance size to attach more volumes. For a detailed list of "
        "limits please see https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/"
        "volume_limits.html"
    )


# Every filter botocore documents for DescribeInstanceTypes.
INSTANCE_TYPE_FILTERS = (
    "auto-recovery-supported",
    "bare-metal",
    "burstable-performance-supported",
    "current-generation",
    "dedicated-hosts-supported",
    "ebs-info.attachment-limit-type",
    "ebs-info.maximum-ebs-attachments",
    "ebs-info.ebs-optimized-info.baseline-bandwidth-in-mbps",
    "ebs-info.ebs-optimized-info.baseline-iops",
    "ebs-info.ebs-optimized-info.baseline-throughput-in-mbps",
    "ebs-info.ebs-optimized-info.maximum-bandwidth-in-mbps",
    "ebs-info.ebs-optimized-info.maximum-iops",
    "ebs-info.ebs-optimized-info.maximum-throughput-in-mbps",
    "ebs-info.ebs-optimized-support",
    "ebs-info.encryption-support",
    "ebs-info.nvme-support",
    "free-tier-eligible",
    "hibernation-supported",
    "hypervisor",
    "instance-storage-info.disk.count",
    "instance-storage-info.disk.size-in-gb",
    "instance-storage-info.disk.type",
    "instance-storage-info.encryption-support",
    "instance-storage-info.nvme-support",
    "instance-storage-info.total-size-in-gb",
    "instance-storage-supported",
    "instance-type",
    "memory-info.size-in-mib",
    "network-info.bandwidth-weightings",
    "network-info.efa-info.maximum-efa-interfaces",
    "network-info.efa-supported",
    "network-info.ena-support",
    "network-info.flexible-ena-queues-support",
    "network-info.encryption-in-transit-supported",
    "network-info.ipv4-addresses-per-interface",
    "network-info.ipv6-addresses-per-interface",
    "network-info.ipv6-supported",
    "network-info.maximum-network-cards",
    "network-info.maximum-network-interfaces",
    "network-info.network-performance",
    "nitro-enclaves-support",
    "nitro-tpm-support",
    "nitro-tpm-info.supported-versions",
    "processor-info.supported-architecture",
    "processor-info.sustained-clock-speed-in-ghz",
    "processor-info.supported-features",
    "reboot-migration-support",
    "supported-boot-mode",
    "supported-root-device-type",
    "supported-usage-class",
    "supported-virtualization-type",
    "vcpu-info.default-cores",
    "vcpu-info.default-threads-per-core",
    "vcpu-info.default-vcpus",
    "vcpu-info.valid-cores",
    "vcpu-info.valid-threads-per-core",
)


def _flag(value: bool) -> list[str]:
    return ["true" if value else "false"]


def _number(value: float) -> list[str]:
    """850.0 matches "850.0" and "850"."""
    text = str(value)
    return [text, text.removesuffix(".0")] if text.endswith(".0") else [text]


def instance_type_filter_values(item: InstanceType) -> dict[str, list[str]]:
    """What a type offers each filter; attributes outside the published tables offer
    nothing, so a filter on them matches no type."""
    ebs = item.ebs
    prefix = "ebs-info.ebs-optimized-info."
    return {
        "bare-metal": _flag(item.bare_metal),
        "burstable-performance-supported": _flag(item.burstable),
        "current-generation": _flag(True),
        "ebs-info.attachment-limit-type": [item.attachment_limit_type],
        "ebs-info.maximum-ebs-attachments": [str(item.max_ebs_attachments)],
        prefix + "baseline-bandwidth-in-mbps": [str(ebs.baseline_bandwidth_mbps)],
        prefix + "baseline-iops": [str(ebs.baseline_iops)],
        prefix + "baseline-throughput-in-mbps": _number(ebs.baseline_throughput_mbps),
        prefix + "maximum-bandwidth-in-mbps": [str(ebs.maximum_bandwidth_mbps)],
        prefix + "maximum-iops": [str(ebs.maximum_iops)],
        prefix + "maximum-throughput-in-mbps": _number(ebs.maximum_throughput_mbps),
        "ebs-info.ebs-optimized-support": ["default"],
        "ebs-info.encryption-support": ["supported"],
        "ebs-info.nvme-support": ["required"],
        "hypervisor": [item.hypervisor] if item.hypervisor else [],
        "instance-storage-supported": _flag(False),
        "instance-type": [item.name],
        "memory-info.size-in-mib": [str(item.memory_mib)],
        "network-info.efa-supported": _flag(item.efa_supported),
        "network-info.network-performance": [item.network_performance],
        "processor-info.supported-architecture": [item.architecture],
        "supported-root-device-type": ["ebs"],
        "supported-virtualization-type": ["hvm"],
        "vcpu-info.default-vcpus": [str(item.vcpus)],
    }


def describe_instance_types(
    *,
    names: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    dry_run: bool = False,
) -> list[InstanceType]:
    check_filters(filters, INSTANCE_TYPE_FILTERS)
    unknown = [name for name in names if name not in INSTANCE_TYPES]
    if unknown:
        raise errors.InvalidInstanceType(unknown)
    check_dry_run(dry_run)
    chosen = (
        [INSTANCE_TYPES[name] for name in dict.fromkeys(names)]
        if names
        else list(INSTANCE_TYPES.values())
    )
    return [t for t in chosen if matches(instance_type_filter_values(t), filters)]
