"""EC2 actions on tags, zones, regions and the account's EBS encryption settings."""

from __future__ import annotations

from fakestor import errors
from fakestor.control import (
    account,
    regions,
    tags,
)
from fakestor.control.context import Ebs
from fakestor.ec2 import views
from fakestor.ec2.actions.common import (
    Params,
    Result,
    action,
    check_paging,
    dry_run_of,
    filters_of,
    page_of,
    tags_of,
)


@action
def create_tags(ebs: Ebs, params: Params) -> Result:
    tags.create_tags(ebs, params["Resources"], tags_of(params["Tags"]), dry_run=dry_run_of(params))
    return {}


@action
def delete_tags(ebs: Ebs, params: Params) -> Result:
    doomed = []
    for item in params.get("Tags", []):
        if "Key" not in item:
            raise errors.MissingParameter("Tag.N.Key")
        doomed.append((item["Key"], item.get("Value")))
    tags.delete_tags(ebs, params["Resources"], doomed, dry_run=dry_run_of(params))
    return {}


@action
def describe_tags(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeTags", params, 5, 1000)
    found = tags.describe_tags(ebs, filters=filters_of(params), dry_run=dry_run_of(params))
    page, token = page_of(
        "DescribeTags", params, page_size, found, lambda t: f"{t.resource_id}\0{t.key}"
    )
    return {"Tags": [views.tag_description(t) for t in page], "NextToken": token}


# ---- region, zones and account settings ------------------------------------


@action
def describe_availability_zones(ebs: Ebs, params: Params) -> Result:
    region = ebs.region
    zones = account.describe_zones(
        ebs,
        zone_names=params.get("ZoneNames", []),
        zone_ids=params.get("ZoneIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    return {
        "AvailabilityZones": [
            {
                "ZoneName": zone,
                "ZoneId": region.zone_id(zone),
                "State": "available",
                "RegionName": region.name,
                "ZoneType": "availability-zone",
                "OptInStatus": "opt-in-not-required",
                "GroupName": region.name,
                "NetworkBorderGroup": region.name,
                "Messages": [],
            }
            for zone in zones
        ]
    }


@action
def describe_regions(ebs: Ebs, params: Params) -> Result:
    names = account.describe_regions(
        ebs,
        region_names=params.get("RegionNames", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    return {
        "Regions": [
            {
                "RegionName": name,
                "Endpoint": account.region_endpoint(name),
                "OptInStatus": regions.opt_in_status(name),
            }
            for name in names
        ]
    }


@action
def get_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    enabled = account.get_encryption_by_default(ebs, dry_run=dry_run_of(params))
    return {"EbsEncryptionByDefault": enabled, "SseType": "sse-ebs"}


@action
def enable_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    enabled = account.set_encryption_by_default(ebs, True, dry_run=dry_run_of(params))
    return {"EbsEncryptionByDefault": enabled}


@action
def disable_ebs_encryption_by_default(ebs: Ebs, params: Params) -> Result:
    enabled = account.set_encryption_by_default(ebs, False, dry_run=dry_run_of(params))
    return {"EbsEncryptionByDefault": enabled}


@action
def get_ebs_default_kms_key_id(ebs: Ebs, params: Params) -> Result:
    return {"KmsKeyId": account.default_kms_key_id(ebs, dry_run=dry_run_of(params))}


@action
def modify_ebs_default_kms_key_id(ebs: Ebs, params: Params) -> Result:
    key = account.modify_default_kms_key_id(ebs, params["KmsKeyId"], dry_run=dry_run_of(params))
    return {"KmsKeyId": key}


@action
def reset_ebs_default_kms_key_id(ebs: Ebs, params: Params) -> Result:
    return {"KmsKeyId": account.reset_default_kms_key_id(ebs, dry_run=dry_run_of(params))}
