"""KMS on fakestor's endpoint, and EBS's use of its keys: boto3's `kms`, `ec2` and `ebs`
clients and the aws CLI against the metadata backend."""

from __future__ import annotations

import re
import sqlite3
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import REGION, ZONE, Server, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_ebs_direct import ebs_client
from tests.test_cli import aws

ACCOUNT = "123456789012"
KEY_ARN = re.compile(rf"arn:aws:kms:{REGION}:{ACCOUNT}:key/[0-9a-f-]{{36}}")
INSTANCE_STORE_IMAGE = "ami-00000000000000001"


def kms_client(url: str, region: str = REGION) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def kms(server: Server) -> Any:
    return kms_client(server.url)


def error_of(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        call(**kwargs)
    response: dict[str, Any] = refused.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, response
    return dict(response["Error"])


def code_of(call: Any, **kwargs: Any) -> str:
    return str(error_of(call, **kwargs)["Code"])


def new_key(kms: Any, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = kms.create_key(**extra)["KeyMetadata"]
    return metadata


def alias_name(kms: Any, stem: str) -> str:
    """An alias name no other test of the shared server has used."""
    return f"alias/{stem}-{new_key(kms)['KeyId'][:8]}"


# ---- KMS: keys ----------------------------------------------------------------------------


def test_create_key_and_describe_it_by_id_arn_alias_and_alias_arn(kms: Any) -> None:
    made = new_key(kms, Description="for volumes", Tags=[{"TagKey": "team", "TagValue": "a"}])
    assert made["KeyState"] == "Enabled" and made["Enabled"] is True
    assert made["KeyManager"] == "CUSTOMER" and made["Origin"] == "AWS_KMS"
    assert made["KeySpec"] == "SYMMETRIC_DEFAULT" and made["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert made["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert made["AWSAccountId"] == ACCOUNT and made["Description"] == "for volumes"
    assert KEY_ARN.fullmatch(made["Arn"]) and made["Arn"].endswith(made["KeyId"])
    name = alias_name(kms, "named")
    kms.create_alias(AliasName=name, TargetKeyId=made["KeyId"])
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"
    for form in (made["KeyId"], made["Arn"], name, alias_arn):
        assert kms.describe_key(KeyId=form)["KeyMetadata"]["Arn"] == made["Arn"], form
    assert kms.list_resource_tags(KeyId=made["KeyId"])["Tags"] == [
        {"TagKey": "team", "TagValue": "a"}
    ]


def test_describe_key_errors(kms: Any) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    error = error_of(kms.describe_key, KeyId=unknown)
    assert error["Code"] == "NotFoundException"
    assert error["Message"] == f"Key 'arn:aws:kms:{REGION}:{ACCOUNT}:key/{unknown}' does not exist"
    assert code_of(kms.describe_key, KeyId="not-a-key") == "NotFoundException"
    assert code_of(kms.describe_key, KeyId="alias/never-made") == "NotFoundException"
    assert code_of(kms.describe_key, KeyId="arn:aws:kms:nonsense") == "InvalidArnException"
    elsewhere = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{unknown}"
    assert code_of(kms.describe_key, KeyId=elsewhere) == "NotFoundException"


def test_asymmetric_and_multi_region_keys(kms: Any) -> None:
    signing = new_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    assert "RSASSA_PSS_SHA_256" in signing["SigningAlgorithms"]
    assert "EncryptionAlgorithms" not in signing
    assert code_of(kms.create_key, KeySpec="HMAC_256", KeyUsage="ENCRYPT_DECRYPT") == (
        "ValidationException"
    )
    multi = new_key(kms, MultiRegion=True)
    assert multi["KeyId"].startswith("mrk-") and multi["MultiRegion"] is True
    assert multi["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
    assert code_of(kms.create_key, Origin="EXTERNAL") == "UnsupportedOperationException"


def test_list_keys_pages_with_limit_and_marker(kms: Any) -> None:
    made = {new_key(kms)["KeyId"] for _ in range(3)}
    seen: list[str] = []
    page = kms.list_keys(Limit=2)
    while True:
        assert len(page["Keys"]) <= 2
        seen += [k["KeyId"] for k in page["Keys"]]
        for key in page["Keys"]:
            assert key["KeyArn"].endswith(key["KeyId"])
        if not page["Truncated"]:
            break
        page = kms.list_keys(Limit=2, Marker=page["NextMarker"])
    assert made <= set(seen) and len(seen) == len(set(seen))
    assert code_of(kms.list_keys, Marker="!!not-a-marker!!") == "InvalidMarkerException"


def test_enable_and_disable(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    kms.disable_key(KeyId=key)
    described = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert described["KeyState"] == "Disabled" and described["Enabled"] is False
    kms.disable_key(KeyId=key)  # already disabled: no error, as in KMS
    kms.enable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert code_of(kms.enable_key, KeyId="alias/whatever") == "NotFoundException"


def test_schedule_and_cancel_key_deletion(kms: Any) -> None:
    key = new_key(kms)
    error = error_of(kms.schedule_key_deletion, KeyId=key["KeyId"], PendingWindowInDays=3)
    assert error["Code"] == "ValidationException" and "pendingWindowInDays" in error["Message"]
    assert code_of(kms.schedule_key_deletion, KeyId=key["KeyId"], PendingWindowInDays=31) == (
        "ValidationException"
    )
    assert code_of(kms.cancel_key_deletion, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    scheduled = kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert scheduled["KeyId"] == key["Arn"] and scheduled["KeyState"] == "PendingDeletion"
    assert scheduled["PendingWindowInDays"] == 7 and scheduled["DeletionDate"]
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["PendingDeletionWindowInDays"] == 7 and described["DeletionDate"]
    for call in (kms.enable_key, kms.disable_key, kms.schedule_key_deletion):
        assert code_of(call, KeyId=key["KeyId"]) == "KMSInvalidStateException"
    name = alias_name(kms, "doomed")
    assert code_of(kms.create_alias, AliasName=name, TargetKeyId=key["KeyId"]) == (
        "KMSInvalidStateException"
    )
    assert code_of(kms.tag_resource, KeyId=key["KeyId"], Tags=[]) == "KMSInvalidStateException"
    assert kms.cancel_key_deletion(KeyId=key["KeyId"])["KeyId"] == key["Arn"]
    described = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Disabled" and "DeletionDate" not in described


def test_a_key_is_deleted_with_its_aliases_when_its_waiting_period_ends(
    start_server: ServerFactory,
) -> None:
    # 7 days at 1,209,600x take half a second.
    server = start_server("--time-scale", "1209600")
    kms = kms_client(server.url)
    key = new_key(kms)["KeyId"]
    kms.create_alias(AliasName="alias/short-lived", TargetKeyId=key)
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)

    def gone() -> bool:
        try:
            kms.describe_key(KeyId=key)
        except kms.exceptions.NotFoundException:
            return True
        return False

    wait_for(gone, timeout=10)
    assert key not in [k["KeyId"] for k in kms.list_keys()["Keys"]]
    names = [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert "alias/short-lived" not in names


# ---- KMS: aliases and tags ----------------------------------------------------------------


def test_aliases_create_list_update_delete(kms: Any) -> None:
    first, second = new_key(kms), new_key(kms)
    name = alias_name(kms, "app")
    kms.create_alias(AliasName=name, TargetKeyId=first["Arn"])
    listed = kms.list_aliases(KeyId=first["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in listed] == [name]
    assert listed[0]["TargetKeyId"] == first["KeyId"]
    assert listed[0]["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}"
    assert listed[0]["CreationDate"] and listed[0]["LastUpdatedDate"]
    assert kms.list_aliases(KeyId=first["Arn"])["Aliases"] == listed
    kms.update_alias(AliasName=name, TargetKeyId=second["KeyId"])
    assert kms.list_aliases(KeyId=first["KeyId"])["Aliases"] == []
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == second["KeyId"]
    kms.delete_alias(AliasName=name)
    assert code_of(kms.describe_key, KeyId=name) == "NotFoundException"
    assert code_of(kms.delete_alias, AliasName=name) == "NotFoundException"


def test_alias_errors(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    name = alias_name(kms, "taken")
    kms.create_alias(AliasName=name, TargetKeyId=key)
    error = error_of(kms.create_alias, AliasName=name, TargetKeyId=key)
    assert error["Code"] == "AlreadyExistsException" and name in error["Message"]
    unknown = "11111111-1111-1111-1111-111111111111"
    assert code_of(kms.create_alias, AliasName=name + "x", TargetKeyId=unknown) == (
        "NotFoundException"
    )
    assert code_of(kms.create_alias, AliasName="alias/aws/mine", TargetKeyId=key) == (
        "InvalidAliasNameException"
    )
    assert code_of(kms.create_alias, AliasName="no-prefix", TargetKeyId=key) == (
        "ValidationException"
    )
    # The model's pattern for alias names.
    assert code_of(kms.create_alias, AliasName="alias/sp ace", TargetKeyId=key) == (
        "ValidationException"
    )
    assert code_of(kms.list_aliases, KeyId=unknown) == "NotFoundException"


def test_tags_on_keys(kms: Any) -> None:
    key = new_key(kms)["KeyId"]
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "b", "TagValue": "2"}])
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "a", "TagValue": "1"}])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [
        {"TagKey": "a", "TagValue": "1"},
        {"TagKey": "b", "TagValue": "2"},
    ]
    kms.untag_resource(KeyId=key, TagKeys=["a"])
    assert [t["TagKey"] for t in kms.list_resource_tags(KeyId=key)["Tags"]] == ["b"]
    reserved = [{"TagKey": "aws:owner", "TagValue": "x"}]
    assert code_of(kms.tag_resource, KeyId=key, Tags=reserved) == "TagException"


def test_unserved_operations_and_regions(server: Server, kms: Any) -> None:
    error = error_of(kms.generate_random, NumberOfBytes=16)
    assert error["Code"] == "UnsupportedOperationException"
    key = new_key(kms)["KeyId"]
    elsewhere = kms_client(server.url, "eu-west-1")
    assert code_of(elsewhere.describe_key, KeyId=key) == "NotFoundException"
    assert key not in [k["KeyId"] for k in elsewhere.list_keys()["Keys"]]


def test_keys_survive_a_restart(start_server: ServerFactory) -> None:
    server = start_server()
    kms = kms_client(server.url)
    key = new_key(kms)["KeyId"]
    kms.create_alias(AliasName="alias/kept", TargetKeyId=key)
    kms.disable_key(KeyId=key)
    server.kill()
    server.start()
    described = kms.describe_key(KeyId="alias/kept")["KeyMetadata"]
    assert described["KeyId"] == key and described["KeyState"] == "Disabled"


# ---- the AWS managed key and EC2's default key -------------------------------------------


def test_alias_aws_ebs_is_predefined_and_its_key_made_on_first_encrypted_volume(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    kms, ec2 = kms_client(server.url), server.client()
    before = kms.list_aliases()["Aliases"]
    assert before == [
        {"AliasName": "alias/aws/ebs", "AliasArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/ebs"}
    ]
    assert kms.list_keys()["Keys"] == []
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == "alias/aws/ebs"
    volume_id = new_volume(ec2, Encrypted=True)
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    managed = kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS" and managed["KeyState"] == "Enabled"
    assert volume["KmsKeyId"] == managed["Arn"]
    (alias,) = kms.list_aliases(KeyId=managed["KeyId"])["Aliases"]
    assert alias["AliasName"] == "alias/aws/ebs" and alias["TargetKeyId"] == managed["KeyId"]
    # An AWS managed key is AWS's to change.
    for call in (kms.disable_key, kms.schedule_key_deletion):
        assert code_of(call, KeyId=managed["KeyId"]) == "AccessDeniedException"
    assert code_of(kms.create_alias, AliasName="alias/mine", TargetKeyId=managed["KeyId"]) == (
        "AccessDeniedException"
    )


def test_modify_get_and_reset_the_default_key(start_server: ServerFactory) -> None:
    server = start_server()
    kms, ec2 = kms_client(server.url), server.client()
    key = new_key(kms)
    kms.create_alias(AliasName="alias/ebs-default", TargetKeyId=key["KeyId"])
    with pytest.raises(ClientError) as dry:
        ec2.modify_ebs_default_kms_key_id(KmsKeyId="alias/ebs-default", DryRun=True)
    assert dry.value.response["Error"]["Code"] == "DryRunOperation"
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == "alias/aws/ebs"
    modified = ec2.modify_ebs_default_kms_key_id(KmsKeyId="alias/ebs-default")
    assert modified["KmsKeyId"] == key["Arn"]
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == key["Arn"]
    volume_id = new_volume(ec2, Encrypted=True)
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["KmsKeyId"] == key["Arn"]
    reset = ec2.reset_ebs_default_kms_key_id()["KmsKeyId"]
    assert reset == kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == "alias/aws/ebs"
    ec2.enable_ebs_encryption_by_default()
    by_default = new_volume(ec2)
    assert ec2.describe_volumes(VolumeIds=[by_default])["Volumes"][0]["KmsKeyId"] == reset
    # A default key KMS does not know is kept as given; the volumes it would encrypt fail.
    unknown = "33333333-3333-3333-3333-333333333333"
    assert ec2.modify_ebs_default_kms_key_id(KmsKeyId=unknown)["KmsKeyId"] == unknown
    doomed = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    wait_for(lambda: _vanishes(ec2, doomed))


# ---- EC2 with customer keys ---------------------------------------------------------------


def test_every_form_of_key_is_recorded_as_the_key_arn(server: Server, kms: Any) -> None:
    ec2 = server.client()
    key = new_key(kms)
    name = alias_name(kms, "vol")
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    forms = (key["KeyId"], key["Arn"], name, f"arn:aws:kms:{REGION}:{ACCOUNT}:{name}")
    for form in forms:
        volume_id = new_volume(ec2, Encrypted=True, KmsKeyId=form)
        volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        assert volume["Encrypted"] is True and volume["KmsKeyId"] == key["Arn"], form


def _vanishes(ec2: Any, volume_id: str) -> bool:
    try:
        ec2.describe_volumes(VolumeIds=[volume_id])
    except ClientError as refused:
        return bool(refused.response["Error"]["Code"] == "InvalidVolume.NotFound")
    return False


def test_a_volume_with_a_key_ebs_cannot_use_is_accepted_then_gone(server: Server, kms: Any) -> None:
    ec2 = server.client()
    disabled, doomed = new_key(kms)["KeyId"], new_key(kms)["KeyId"]
    kms.disable_key(KeyId=disabled)
    kms.schedule_key_deletion(KeyId=doomed)
    asymmetric = new_key(kms, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyId"]
    unknown = "22222222-2222-2222-2222-222222222222"
    for key in (unknown, "alias/no-such-alias", disabled, doomed, asymmetric):
        created = ec2.create_volume(AvailabilityZone=ZONE, Size=1, Encrypted=True, KmsKeyId=key)
        assert created["State"] == "creating"
        wait_for(lambda created=created: _vanishes(ec2, created["VolumeId"]))


def test_a_copy_with_a_disabled_key_ends_in_error(server: Server, kms: Any) -> None:
    ec2 = server.client()
    key = new_key(kms)["KeyId"]
    kms.disable_key(KeyId=key)
    volume_id = new_volume(ec2)
    source = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[source])
    copy = ec2.copy_snapshot(
        SourceSnapshotId=source, SourceRegion=REGION, Encrypted=True, KmsKeyId=key
    )["SnapshotId"]

    def failed() -> dict[str, Any] | None:
        found: dict[str, Any] = ec2.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]
        return found if found["State"] == "error" else None

    snapshot = wait_for(failed)
    assert snapshot["StateMessage"] == "Given key ID is not accessible"
    assert snapshot["KmsKeyId"].endswith(key)


def test_a_launch_with_a_key_ebs_cannot_use_is_terminated(server: Server, kms: Any) -> None:
    ec2 = server.client()
    key = new_key(kms)["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=30)
    mapping = {
        "DeviceName": "/dev/sdf",
        "Ebs": {"VolumeSize": 1, "Encrypted": True, "KmsKeyId": key},
    }
    launched = ec2.run_instances(
        ImageId=INSTANCE_STORE_IMAGE, MinCount=1, MaxCount=1, BlockDeviceMappings=[mapping]
    )["Instances"][0]

    def terminated() -> dict[str, Any] | None:
        found: dict[str, Any] = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])[
            "Reservations"
        ][0]["Instances"][0]
        return found if found["State"]["Name"] == "terminated" else None

    # pending -> shutting-down -> terminated (the InstanceTerminated waiter fails on pending).
    instance = wait_for(terminated)
    assert instance["StateReason"]["Code"] == "Client.InvalidKMSKey.InvalidState"
    assert instance["BlockDeviceMappings"] == []


def test_a_launch_with_a_usable_key_runs_with_it(server: Server, kms: Any) -> None:
    ec2 = server.client()
    key = new_key(kms)
    mapping = {
        "DeviceName": "/dev/sdf",
        "Ebs": {"VolumeSize": 1, "Encrypted": True, "KmsKeyId": key["KeyId"]},
    }
    launched = ec2.run_instances(
        ImageId=INSTANCE_STORE_IMAGE, MinCount=1, MaxCount=1, BlockDeviceMappings=[mapping]
    )["Instances"][0]
    fast_waiter(ec2, "instance_running")(InstanceIds=[launched["InstanceId"]])
    instance = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0][
        "Instances"
    ][0]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["KmsKeyId"] == key["Arn"]
    assert "StateReason" not in instance


def test_ebs_direct_start_snapshot_refuses_a_disabled_key(server: Server, kms: Any) -> None:
    ebs = ebs_client(server.url)
    key = new_key(kms)
    kms.disable_key(KeyId=key["KeyId"])
    with pytest.raises(ClientError) as refused:
        ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key["Arn"])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert refused.value.response["Reason"] == "INVALID_CUSTOMER_KEY"
    kms.enable_key(KeyId=key["KeyId"])
    started = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key["Arn"])
    assert started["KmsKeyArn"] == key["Arn"] and started["SseType"] == "sse-kms"


def test_create_volume_permission_for_a_group_other_than_all_is_refused(server: Server) -> None:
    ec2 = server.client()
    snapshot = ec2.create_snapshot(VolumeId=new_volume(ec2))["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot])
    error = error_of(
        ec2.modify_snapshot_attribute,
        SnapshotId=snapshot,
        Attribute="createVolumePermission",
        CreateVolumePermission={"Add": [{"Group": "admins"}]},
    )
    assert error["Code"] == "InvalidParameterValue" and "admins" in error["Message"]
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot,
        Attribute="createVolumePermission",
        CreateVolumePermission={"Add": [{"Group": "all"}]},
    )


# ---- the front door: services posting to / --------------------------------------------------


def test_a_service_without_a_handler_at_slash_gets_its_own_501(server: Server) -> None:
    # CloudWatch's Query protocol posts to /, signed for `monitoring`: fakestor serves
    # CloudWatch's JSON and CBOR protocols, not that one.
    body = "Action=ListMetrics&Version=2010-08-01"
    signed = AWSRequest(
        method="POST",
        url=f"{server.url}/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials("AKIDFAKESTOR", "fakestor-secret"), "monitoring", REGION).add_auth(signed)
    request = urllib.request.Request(
        signed.url, data=body.encode(), headers=dict(signed.headers), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 501
    text = refused.value.read().decode()
    assert "<Code>NotImplemented</Code>" in text and "monitoring" in text


def test_the_aws_cli_creates_a_key_and_lists_aliases(server: Server) -> None:
    made = aws(server, "create-key", "--description", "from the cli", service="kms")
    key_id = made["KeyMetadata"]["KeyId"]
    aws(server, "create-alias", "--alias-name", f"alias/cli-{key_id[:8]}", "--target-key-id",
        key_id, service="kms")  # fmt: skip
    listed = aws(server, "list-aliases", "--key-id", key_id, service="kms")
    assert [a["AliasName"] for a in listed["Aliases"]] == [f"alias/cli-{key_id[:8]}"]
    every = aws(server, "list-aliases", service="kms")
    assert "alias/aws/ebs" in [a["AliasName"] for a in every["Aliases"]]


def test_a_data_dir_from_before_kms_keeps_its_encrypted_volumes(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    ec2 = server.client()
    volume_id = new_volume(ec2, Encrypted=True)
    snapshot = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot])
    server.stop()
    # What fakestor recorded before it served KMS: a default key that never existed.
    legacy = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/fakestor-aws-ebs-default-key"
    with sqlite3.connect(server.data_dir / "state.db") as db:
        db.execute("UPDATE volumes SET kms_key_id=?", (legacy,))
        db.execute("UPDATE snapshots SET kms_key_id=?", (legacy,))
        db.execute("DELETE FROM kms_keys")
        db.execute("DELETE FROM kms_aliases")
    server.start()
    managed = kms_client(server.url).describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["KmsKeyId"] == managed
    restored = new_volume(ec2, SnapshotId=snapshot)
    assert ec2.describe_volumes(VolumeIds=[restored])["Volumes"][0]["KmsKeyId"] == managed
