"""Account and region settings: zones, EBS encryption by default and its KMS key."""

from __future__ import annotations

from collections.abc import Sequence

from fakestor import errors
from fakestor.control.context import Ebs, check_dry_run
from fakestor.control.filters import Filter, check_filters, matches
from fakestor.control.regions import opt_in_status
from fakestor.control.resources import Snapshot


def check_zone(ebs: Ebs, zone: str) -> str:
    if zone not in ebs.region.zones:
        raise errors.InvalidParameterValue(
            f"Invalid availability zone: [{zone}]. Zones of {ebs.region.name}: "
            f"{', '.join(ebs.region.zones)}."
        )
    return zone


def encryption_by_default(ebs: Ebs) -> bool:
    return ebs.store.get_setting("ebs_encryption_by_default") == "true"


def set_encryption_by_default(ebs: Ebs, enabled: bool, *, dry_run: bool = False) -> bool:
    check_dry_run(dry_run)
    ebs.store.set_setting("ebs_encryption_by_default", "true" if enabled else "false")
    return enabled


def resolve_encryption(
    ebs: Ebs,
    requested: bool | None,
    kms_key_id: str | None,
    source: Snapshot | None,
    what: str,
) -> tuple[bool, str | None]:
    """EBS's encryption rule for a new volume or snapshot copy: (encrypted, KMS key).

    Encrypted if asked, if encryption by default is on, or if `source` is; a KMS key
    only with encryption; the region's default key when none is given. `what` names
    the new resource in the error for an unencrypted copy of an encrypted source.
    """
    encrypted = bool(requested) or encryption_by_default(ebs)
    if source is not None and source.encrypted:
        if requested is False:
            raise errors.InvalidParameterCombination(
                f"Snapshot {source.id} is encrypted, so {what} must be encrypted too."
            )
        encrypted = True
        kms_key_id = kms_key_id or source.kms_key_id
    if kms_key_id is not None and not encrypted:
        raise errors.InvalidParameterDependency("KmsKeyId", "Encrypted")
    if encrypted and kms_key_id is None:
        kms_key_id = ebs.region.default_kms_key_id
    return encrypted, kms_key_id


def get_encryption_by_default(ebs: Ebs, *, dry_run: bool = False) -> bool:
    check_dry_run(dry_run)
    return encryption_by_default(ebs)


def default_kms_key_id(ebs: Ebs, *, dry_run: bool = False) -> str:
    check_dry_run(dry_run)
    return ebs.region.default_kms_key_id


def zone_named(ebs: Ebs, zone_id: str) -> str:
    """The zone whose id (use1-az1) is `zone_id`."""
    by_id = {ebs.region.zone_id(zone): zone for zone in ebs.region.zones}
    if zone_id not in by_id:
        raise errors.InvalidParameterValue(f"Invalid availability zone id: [{zone_id}]")
    return by_id[zone_id]


def describe_zones(
    ebs: Ebs,
    zone_names: Sequence[str] = (),
    zone_ids: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    *,
    dry_run: bool = False,
) -> list[str]:
    """The region's zones that are named (by name or id) and match `filters`."""
    region = ebs.region
    for name in zone_names:
        if name not in region.zones:
            raise errors.InvalidParameterValue(f"The zone '{name}' does not exist.")
    known_ids = {region.zone_id(zone) for zone in region.zones}
    for zone_id in zone_ids:
        if zone_id not in known_ids:
            raise errors.InvalidParameterValue(f"The zone ID '{zone_id}' does not exist.")
    selected = []
    for zone in region.zones:
        if zone_names and zone not in zone_names:
            continue
        if zone_ids and region.zone_id(zone) not in zone_ids:
            continue
        values: dict[str, list[str]] = {
            "zone-name": [zone],
            "zone-id": [region.zone_id(zone)],
            "region-name": [region.name],
            "state": ["available"],
            "zone-type": ["availability-zone"],
            "group-name": [region.name],
        }
        check_filters(filters, values)
        if matches(values, filters):
            selected.append(zone)
    check_dry_run(dry_run)
    return selected


def describe_regions(
    ebs: Ebs,
    region_names: Sequence[str] = (),
    filters: Sequence[Filter] = (),
    *,
    dry_run: bool = False,
) -> list[str]:
    """The regions served that are named and match `filters`; every one is enabled, so
    AllRegions changes nothing."""
    check_dry_run(dry_run)
    served = ebs.regions.names if ebs.regions else (ebs.region.name,)
    unknown = [region for region in region_names if region not in served]
    if unknown:
        raise errors.InvalidParameterValue(f"Invalid region: {unknown[0]}")
    selected = []
    for name in served:
        if region_names and name not in region_names:
            continue
        values = {
            "region-name": [name],
            "endpoint": [region_endpoint(name)],
            "opt-in-status": [opt_in_status(name)],
        }
        check_filters(filters, values)
        if matches(values, filters):
            selected.append(name)
    return selected


def region_endpoint(name: str) -> str:
    return f"ec2.{name}.amazonaws.com"
