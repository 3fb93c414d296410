"""Typed requests: the parameters of control-plane calls that take more than a few."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TagSpec:
    """One TagSpecification: tags for the resources of one type a request creates."""

    resource_type: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class VolumeRequest:
    """CreateVolume's parameters."""

    zone: str | None = None
    size: int | None = None
    snapshot_id: str | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    multi_attach: bool = False
    tag_specs: Sequence[TagSpec] = ()
    initialization_rate: int | None = None  # VolumeInitializationRate, MiB/s


@dataclass(frozen=True)
class VolumeCopyRequest:
    """CopyVolumes' parameters; None takes the source's size or EC2's default."""

    source_volume_id: str
    size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    multi_attach: bool = False
    tag_specs: Sequence[TagSpec] = ()


@dataclass(frozen=True)
class VolumeChange:
    """ModifyVolume's parameters; None keeps the current value."""

    size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    multi_attach: bool | None = None


@dataclass(frozen=True)
class InstanceSnapshotsRequest:
    """CreateSnapshots' parameters: a snapshot of each volume attached to an instance."""

    instance_id: str
    exclude_boot_volume: bool = False
    exclude_volume_ids: Sequence[str] = ()
    description: str = ""
    tag_specs: Sequence[TagSpec] = ()
    copy_tags_from_volume: bool = False


@dataclass(frozen=True)
class SnapshotCopyRequest:
    """CopySnapshot's parameters."""

    source_snapshot_id: str
    source_region: str
    description: str | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    tag_specs: Sequence[TagSpec] = ()


@dataclass(frozen=True)
class DeviceMapping:
    """One block-device mapping of an image or a launch: an EBS volume, an instance-store
    volume (`virtual_name` ephemeralN), or the removal of the image's mapping (`no_device`)."""

    device_name: str
    virtual_name: str | None = None
    no_device: bool = False
    ebs: bool = False  # an EBS volume, with the fields below (None: the image's or EBS's)
    volume_size: int | None = None
    volume_type: str | None = None
    iops: int | None = None
    throughput: int | None = None
    snapshot_id: str | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    delete_on_termination: bool | None = None
    initialization_rate: int | None = None  # VolumeInitializationRate, MiB/s


@dataclass(frozen=True)
class InstanceAttributeChange:
    """ModifyInstanceAttribute's changes; None (or no entry) keeps the current value."""

    delete_on_termination: Mapping[str, bool] = field(default_factory=dict)  # by device
    instance_type: str | None = None
    disable_api_termination: bool | None = None


@dataclass(frozen=True)
class LaunchRequest:
    """RunInstances' parameters."""

    image_id: str
    min_count: int
    max_count: int
    instance_type: str | None = None
    zone: str | None = None
    tag_specs: Sequence[TagSpec] = field(default_factory=tuple)
    mappings: Sequence[DeviceMapping] = ()
    disable_api_termination: bool = False
