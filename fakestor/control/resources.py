"""The control plane's resources as plain records, and the host's identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from fakestor.control.states import (
    AttachmentState,
    InitializationState,
    InstanceState,
    ModificationState,
    SnapshotState,
    VolumeState,
)


def utcnow() -> datetime:
    # EC2 reports times to the millisecond.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_text(moment: datetime) -> str:
    return moment.isoformat()


def to_wire_time(moment: datetime) -> str:
    """A time as EC2 writes it, and so as clients see it: 2026-11-27T03:55:16.187Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)


COMPASS = {"northeast": "ne", "southeast": "se", "northwest": "nw", "southwest": "sw"}

# The AZ id numbers a region offers accounts where they are not 1..n (AWS's published AZ
# ids: apne1-az3, usw1-az2 and cac1-az3 are not offered), matched to the zone letters in order.
ZONE_ID_NUMBERS = {
    "ap-northeast-1": (1, 2, 4),
    "us-west-1": (1, 3),
    "ca-central-1": (1, 2, 4),
}


@dataclass(frozen=True)
class Region:
    """Where this fakestor pretends to be: one region, its zones and one account."""

    name: str = "us-east-1"
    zone_letters: str = "abc"
    account_id: str = "123456789012"

    @property
    def zones(self) -> list[str]:
        return [f"{self.name}{letter}" for letter in self.zone_letters]

    def zone_id(self, zone: str) -> str:
        # AWS zone ids look like use1-az1: a short region code and a number. An id names the
        # same physical zone in every account, while EC2 maps zone names to ids per account
        # in its older regions (us-east-1a is use1-az4 in one account, use1-az6 in another).
        # fakestor has one account, so it keeps one fixed mapping: the n-th zone letter of
        # the region is the n-th of its AZ ids, the same on every run and every server.
        parts = self.name.split("-")
        # ap-northeast-1 is apne1, us-gov-west-1 usgw1, eu-west-1 euw1.
        middle = "".join(COMPASS.get(part, part[0]) for part in parts[1:-1])
        short = parts[0] + middle + parts[-1]
        position = self.zone_letters.index(zone[-1])
        numbers = ZONE_ID_NUMBERS.get(self.name)
        if numbers is None or len(numbers) != len(self.zone_letters):
            numbers = tuple(range(1, len(self.zone_letters) + 1))
        return f"{short}-az{numbers[position]}"


@dataclass
class Attachment:
    volume_id: str
    instance_id: str
    device: str
    state: AttachmentState
    attach_time: datetime
    delete_on_termination: bool = False
    device_path: str | None = None
    force_detach: bool = False


@dataclass(frozen=True)
class Initialization:
    """A new volume's initialization (InitializationStatusDetails): its kind (default,
    provisioned-rate, volume-copy), state, percent done and, for a provisioned rate,
    the seconds left."""

    kind: str
    state: InitializationState
    progress: int
    seconds_left: int | None = None


@dataclass
class Volume:
    id: str
    size: int
    volume_type: str
    iops: int | None
    throughput: int | None
    zone: str
    state: VolumeState
    snapshot_id: str | None
    encrypted: bool
    kms_key_id: str | None
    multi_attach: bool
    auto_enable_io: bool
    io_enabled: bool
    create_time: datetime
    status_reason: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    source_volume_id: str | None = None
    initialization_rate: int | None = None
    fast_restored: bool = False
    initialization: Initialization | None = None
    io_performance: str | None = None  # io1/io2, from the last metrics (volume_metrics)


@dataclass
class Snapshot:
    id: str
    volume_id: str
    volume_size: int
    state: SnapshotState
    progress: int
    start_time: datetime
    completion_time: datetime | None
    description: str
    encrypted: bool
    kms_key_id: str | None
    owner_id: str
    source_snapshot_id: str | None = None
    state_message: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    public: bool = False
    shared_with: list[str] = field(default_factory=list)
    storage_tier: str = "standard"
    restore_expiry_time: datetime | None = None


@dataclass
class Modification:
    volume_id: str
    state: ModificationState
    progress: int
    start_time: datetime
    end_time: datetime | None
    original_size: int
    original_type: str
    original_iops: int | None
    original_throughput: int | None
    original_multi_attach: bool
    target_size: int
    target_type: str
    target_iops: int | None
    target_throughput: int | None
    target_multi_attach: bool
    status_message: str | None = None


@dataclass
class Instance:
    id: str
    zone: str
    state: InstanceState
    instance_type: str
    image_id: str
    launch_time: datetime
    is_host: bool
    reservation_id: str = ""
    launch_index: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    root_device_name: str = "/dev/xvda"
    disable_api_termination: bool = False
    ephemeral: list[tuple[str, str]] = field(default_factory=list)  # device, ephemeralN
    state_reason: tuple[str, str] | None = None  # (code, message) when EC2 ended it


@dataclass
class Tag:
    resource_id: str
    resource_type: str
    key: str
    value: str


INSTANCE_STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
