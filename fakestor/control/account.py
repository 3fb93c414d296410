"""Account and region settings: zones, EBS encryption by default and its KMS key."""

from __future__ import annotations

from collections.abc import Sequence

from fakestor import errors
from fakestor.control import kms_keys
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


DEFAULT_KMS_KEY = "ebs_default_kms_key_id"  # the setting ModifyEbsDefaultKmsKeyId makes


def resolve_encryption(
    ebs: Ebs,
    requested: bool | None,
    kms_key_id: str | None,
    source: Snapshot | None,
    what: str,
) -> tuple[bool, str | None]:
    """EBS's encryption rule for a new volume or snapshot copy: (encrypted, KMS key).

    Encrypted if asked, if encryption by default is on, or if `source` is; a KMS key
    only with encryption; the region's default key when none is given. A key given in
    any form EC2 takes (key id, key ARN, alias name, alias ARN) is recorded as its key
    ARN; one KMS does not know is recorded as given, and the task that makes the
    resource fails on it (`kms_keys.unusable_for_ebs`), as EC2 checks keys
    asynchronously. `what` names the new resource in the error for an unencrypted copy
    of an encrypted source.
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
        kms_key_id = default_encryption_key(ebs)
    elif kms_key_id is not None:
        kms_key_id = kms_keys.ebs_key_reference(ebs, kms_key_id)
    return encrypted, kms_key_id


def default_encryption_key(ebs: Ebs) -> str:
    """The key a new encrypted volume gets when none is named: the one set by
    ModifyEbsDefaultKmsKeyId, else the AWS managed key (made on this first use)."""
    return ebs.store.get_setting(DEFAULT_KMS_KEY) or kms_keys.aws_ebs_key(ebs).arn


def get_encryption_by_default(ebs: Ebs, *, dry_run: bool = False) -> bool:
    check_dry_run(dry_run)
    return encryption_by_default(ebs)


def default_kms_key_id(ebs: Ebs, *, dry_run: bool = False) -> str:
    """GetEbsDefaultKmsKeyId: the key set by ModifyEbsDefaultKmsKeyId (its ARN), or
    `alias/aws/ebs` while the AWS managed key is the default. EC2 answers the alias, not
    an ARN, then (the aws CLI's get-ebs-default-kms-key-id example;
    hashicorp/terraform-provider-aws#15137; PaloAltoNetworks/terraform-aws-swfw-modules#103:
    "returns the alias, not the ARN, even after the key is created")."""
    check_dry_run(dry_run)
    return ebs.store.get_setting(DEFAULT_KMS_KEY) or kms_keys.AWS_EBS_ALIAS


def modify_default_kms_key_id(ebs: Ebs, kms_key_id: str, *, dry_run: bool = False) -> str:
    """ModifyEbsDefaultKmsKeyId: any form of key naming is recorded as the key's ARN (the
    aws CLI's example answers an alias with its key's ARN). EC2 checks the key
    asynchronously, so a key KMS does not know is kept as given and the encrypted
    volumes that use it fail to be created."""
    reference = kms_keys.ebs_key_reference(ebs, kms_key_id)
    check_dry_run(dry_run)
    ebs.store.set_setting(DEFAULT_KMS_KEY, reference)
    return reference


def reset_default_kms_key_id(ebs: Ebs, *, dry_run: bool = False) -> str:
    """ResetEbsDefaultKmsKeyId: back to the AWS managed key, whose ARN it answers."""
    check_dry_run(dry_run)
    with ebs.store.transaction() as db:
        db.execute("DELETE FROM settings WHERE key=?", (DEFAULT_KMS_KEY,))
    return kms_keys.aws_ebs_key(ebs).arn


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
