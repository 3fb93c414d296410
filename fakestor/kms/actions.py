"""KMS actions: read the parsed input (botocore member names), call the control plane
(control/kms_keys.py, control/kms_aliases.py), shape the output as the model says."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fakestor import kms_errors
from fakestor.control import kms_aliases, kms_keys
from fakestor.control.context import Ebs
from fakestor.control.kms_keys import KeyRequest, KmsKey

Params = dict[str, Any]
Result = dict[str, Any]
Handler = Callable[[Ebs, Params], Result]
T = TypeVar("T")

ACTIONS: dict[str, Handler] = {}


def action(handler: Handler) -> Handler:
    ACTIONS["".join(part.capitalize() for part in handler.__name__.split("_"))] = handler
    return handler


# Encryption and signing algorithms KeyMetadata lists per key spec and usage.
_ENCRYPTION = {
    "SYMMETRIC_DEFAULT": ["SYMMETRIC_DEFAULT"],
    "RSA": ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
}
_SIGNING = {
    "RSA": [
        "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
    ],
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"],
}  # fmt: skip


def key_metadata(key: KmsKey) -> Result:
    family = key.key_spec.split("_")[0] if key.key_spec.startswith("RSA") else key.key_spec
    metadata: Result = {
        "AWSAccountId": key.account_id,
        "KeyId": key.id,
        "Arn": key.arn,
        "CreationDate": key.creation_date,
        "Enabled": key.enabled,
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state,
        "DeletionDate": key.deletion_date,
        "PendingDeletionWindowInDays": key.pending_window_days,
        "Origin": "AWS_KMS",
        "KeyManager": key.key_manager,
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "MultiRegion": key.multi_region,
    }
    if key.key_usage == "ENCRYPT_DECRYPT":
        metadata["EncryptionAlgorithms"] = _ENCRYPTION.get(family, [])
    elif key.key_usage == "SIGN_VERIFY":
        metadata["SigningAlgorithms"] = _SIGNING.get(family, [])
    elif key.key_usage == "GENERATE_VERIFY_MAC":
        metadata["MacAlgorithms"] = ["HMAC_" + key.key_spec.split("_")[1]]
    elif key.key_usage == "KEY_AGREEMENT":
        metadata["KeyAgreementAlgorithms"] = ["ECDH"]
    if key.multi_region:
        metadata["MultiRegionConfiguration"] = {
            "MultiRegionKeyType": "PRIMARY",
            "PrimaryKey": {"Arn": key.arn, "Region": key.region},
            "ReplicaKeys": [],
        }
    return metadata


def _page(
    params: Params, items: Sequence[T], sort_key: Callable[[T], str], default_limit: int
) -> tuple[list[T], Result]:
    """One page of `items` (sorted by `sort_key`) after the request's Marker, and the
    NextMarker / Truncated members of the answer. A marker is the last key listed."""
    limit = params.get("Limit", default_limit)
    after = None
    if "Marker" in params:
        try:
            after = base64.urlsafe_b64decode(params["Marker"].encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise kms_errors.InvalidMarkerException("The Marker is not one KMS gave.") from None
    remaining = [item for item in items if after is None or sort_key(item) > after]
    page = remaining[:limit]
    if len(remaining) > limit:
        marker = base64.urlsafe_b64encode(sort_key(page[-1]).encode()).decode()
        return page, {"NextMarker": marker, "Truncated": True}
    return page, {"Truncated": False}


def _tags_of(items: Sequence[Params]) -> tuple[tuple[str, str], ...]:
    return tuple((item["TagKey"], item["TagValue"]) for item in items)


@action
def create_key(ebs: Ebs, params: Params) -> Result:
    request = KeyRequest(
        description=params.get("Description", ""),
        key_usage=params.get("KeyUsage"),
        key_spec=params.get("KeySpec") or params.get("CustomerMasterKeySpec"),
        origin=params.get("Origin", "AWS_KMS"),
        multi_region=params.get("MultiRegion", False),
        policy=params.get("Policy"),
        tags=_tags_of(params.get("Tags", [])),
    )
    return {"KeyMetadata": key_metadata(kms_keys.create_key(ebs, request))}


@action
def describe_key(ebs: Ebs, params: Params) -> Result:
    return {"KeyMetadata": key_metadata(kms_keys.describe_key(ebs, params["KeyId"]))}


@action
def list_keys(ebs: Ebs, params: Params) -> Result:
    page, more = _page(params, kms_keys.list_keys(ebs), lambda k: k.id, 100)
    return {"Keys": [{"KeyId": k.id, "KeyArn": k.arn} for k in page], **more}


@action
def enable_key(ebs: Ebs, params: Params) -> Result:
    kms_keys.set_enabled(ebs, params["KeyId"], True)
    return {}


@action
def disable_key(ebs: Ebs, params: Params) -> Result:
    kms_keys.set_enabled(ebs, params["KeyId"], False)
    return {}


@action
def schedule_key_deletion(ebs: Ebs, params: Params) -> Result:
    key = kms_keys.schedule_key_deletion(ebs, params["KeyId"], params.get("PendingWindowInDays"))
    return {
        "KeyId": key.arn,
        "DeletionDate": key.deletion_date,
        "KeyState": key.state,
        "PendingWindowInDays": key.pending_window_days,
    }


@action
def cancel_key_deletion(ebs: Ebs, params: Params) -> Result:
    return {"KeyId": kms_keys.cancel_key_deletion(ebs, params["KeyId"]).arn}


@action
def create_alias(ebs: Ebs, params: Params) -> Result:
    kms_aliases.create_alias(ebs, params["AliasName"], params["TargetKeyId"])
    return {}


@action
def update_alias(ebs: Ebs, params: Params) -> Result:
    kms_aliases.update_alias(ebs, params["AliasName"], params["TargetKeyId"])
    return {}


@action
def delete_alias(ebs: Ebs, params: Params) -> Result:
    kms_aliases.delete_alias(ebs, params["AliasName"])
    return {}


@action
def list_aliases(ebs: Ebs, params: Params) -> Result:
    found = kms_aliases.list_aliases(ebs, params.get("KeyId"))
    page, more = _page(params, found, lambda a: a.name, 50)
    return {
        "Aliases": [
            {
                "AliasName": a.name,
                "AliasArn": a.arn,
                "TargetKeyId": a.key_id,
                "CreationDate": a.creation_date,
                "LastUpdatedDate": a.last_updated,
            }
            for a in page
        ],
        **more,
    }


@action
def tag_resource(ebs: Ebs, params: Params) -> Result:
    kms_aliases.tag_resource(ebs, params["KeyId"], _tags_of(params["Tags"]))
    return {}


@action
def untag_resource(ebs: Ebs, params: Params) -> Result:
    kms_aliases.untag_resource(ebs, params["KeyId"], params["TagKeys"])
    return {}


@action
def list_resource_tags(ebs: Ebs, params: Params) -> Result:
    tags = kms_aliases.list_resource_tags(ebs, params["KeyId"])
    page, more = _page(params, tags, lambda t: t[0], 50)
    return {"Tags": [{"TagKey": k, "TagValue": v} for k, v in page], **more}
