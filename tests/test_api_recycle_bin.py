"""The Recycle Bin through boto3's `rbin` and `ec2` clients and the aws CLI (metadata backend):
every rules action and error, deleted snapshots kept in the bin, restored or purged when
their retention ends, and the bin resumed after kill -9.

Servers run with --time-scale 604800 (an EC2 week takes a second, no step under 0.5 s): a
7-day unlock delay or retention lasts a second here, 365 days 52 s."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, Server, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_ebs_direct import ebs_client
from tests.test_api_regions import region_client
from tests.test_cli import aws

WEEK_A_SECOND = ("--time-scale", "604800")
SCALE = 604800


def rbin_client(url: str, *, validate: bool = True, region: str = REGION) -> Any:
    """An rbin client; without `validate`, what botocore would refuse reaches the server."""
    return boto3.client(
        "rbin",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries={"max_attempts": 1}, parameter_validation=validate),
    )


@pytest.fixture
def fast(start_server: ServerFactory) -> Iterator[Server]:
    server = start_server(*WEEK_A_SECOND)
    yield server
    assert "Traceback" not in server.log(), server.log()


def _days(value: int) -> dict[str, Any]:
    return {"RetentionPeriodValue": value, "RetentionPeriodUnit": "DAYS"}


def _delay(value: int) -> dict[str, Any]:
    return {"UnlockDelay": {"UnlockDelayValue": value, "UnlockDelayUnit": "DAYS"}}


def _error(refused: pytest.ExceptionInfo[ClientError]) -> tuple[str, str | None, int]:
    response = refused.value.response
    status = int(response["ResponseMetadata"]["HTTPStatusCode"])
    return str(response["Error"]["Code"]), response.get("Reason"), status


def _snapshot(ec2: Any, **tags: str) -> str:
    volume_id = new_volume(ec2)
    extra: dict[str, Any] = {}
    if tags:
        pairs = [{"Key": k, "Value": v} for k, v in tags.items()]
        extra["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": pairs}]
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id, **extra)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def _in_bin(ec2: Any) -> dict[str, dict[str, Any]]:
    return {s["SnapshotId"]: s for s in ec2.list_snapshots_in_recycle_bin()["Snapshots"]}


def _exists(ec2: Any, snapshot_id: str) -> bool:
    try:
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    except ClientError as error:
        assert error.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
        return False
    return True


def test_rules_create_get_list_update_delete_and_tags(fast: Server) -> None:
    rbin = rbin_client(fast.url)
    region_rule = rbin.create_rule(
        ResourceType="EBS_SNAPSHOT",
        RetentionPeriod=_days(10),
        Description="every snapshot",
        Tags=[{"Key": "team", "Value": "storage"}],
        ExcludeResourceTags=[{"ResourceTagKey": "scratch", "ResourceTagValue": "yes"}],
    )
    assert region_rule["ResponseMetadata"]["HTTPStatusCode"] == 201
    identifier = region_rule["Identifier"]
    assert len(identifier) == 11 and identifier.isalnum()
    assert region_rule["RuleArn"] == f"arn:aws:rbin:{REGION}:123456789012:rule/{identifier}"
    assert region_rule["Status"] == "available" and "LockState" not in region_rule
    assert region_rule["Tags"] == [{"Key": "team", "Value": "storage"}]

    got = rbin.get_rule(Identifier=identifier)
    assert got["RetentionPeriod"] == _days(10) and got["Description"] == "every snapshot"
    assert got["ExcludeResourceTags"] == [{"ResourceTagKey": "scratch", "ResourceTagValue": "yes"}]

    tag_rule = rbin.create_rule(
        ResourceType="EBS_SNAPSHOT",
        RetentionPeriod=_days(3),
        ResourceTags=[{"ResourceTagKey": "keep", "ResourceTagValue": "true"}],
    )["Identifier"]
    image_rule = rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(365))
    assert image_rule["ResourceType"] == "EC2_IMAGE"

    listed = rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"]
    assert {r["Identifier"] for r in listed} == {identifier, tag_rule}
    assert set(listed[0]) == {"Identifier", "Description", "RetentionPeriod", "RuleArn"}
    by_tag = rbin.list_rules(
        ResourceType="EBS_SNAPSHOT",
        ResourceTags=[{"ResourceTagKey": "keep", "ResourceTagValue": "true"}],
    )["Rules"]
    assert [r["Identifier"] for r in by_tag] == [tag_rule]
    first = rbin.list_rules(ResourceType="EBS_SNAPSHOT", MaxResults=1)
    second = rbin.list_rules(
        ResourceType="EBS_SNAPSHOT", MaxResults=1, NextToken=first["NextToken"]
    )
    assert len(first["Rules"]) == len(second["Rules"]) == 1 and "NextToken" not in second
    pages = rbin.get_paginator("list_rules").paginate(
        ResourceType="EBS_SNAPSHOT", PaginationConfig={"PageSize": 1}
    )
    assert sum(len(page["Rules"]) for page in pages) == 2

    updated = rbin.update_rule(
        Identifier=identifier, RetentionPeriod=_days(20), Description="changed"
    )
    assert updated["RetentionPeriod"] == _days(20) and updated["Description"] == "changed"
    # A Region-level rule becomes a tag-level one by giving it resource tags.
    made_tag_level = rbin.update_rule(
        Identifier=identifier,
        ResourceTags=[{"ResourceTagKey": "env", "ResourceTagValue": "prod"}],
        ExcludeResourceTags=[],
    )
    assert made_tag_level["ResourceTags"] == [{"ResourceTagKey": "env", "ResourceTagValue": "prod"}]

    arn = region_rule["RuleArn"]
    rbin.tag_resource(ResourceArn=arn, Tags=[{"Key": "cost", "Value": "42"}])
    tags = rbin.list_tags_for_resource(ResourceArn=arn)["Tags"]
    assert sorted(t["Key"] for t in tags) == ["cost", "team"]
    rbin.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert rbin.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "cost", "Value": "42"}]

    deleted = rbin.delete_rule(Identifier=identifier)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as refused:
        rbin.get_rule(Identifier=identifier)
    assert _error(refused) == ("ResourceNotFoundException", "RULE_NOT_FOUND", 404)
    for call in (
        lambda: rbin.delete_rule(Identifier=identifier),
        lambda: rbin.update_rule(Identifier=identifier, Description="x"),
        lambda: rbin.lock_rule(Identifier=identifier, LockConfiguration=_delay(7)),
        lambda: rbin.unlock_rule(Identifier=identifier),
        lambda: rbin.list_tags_for_resource(ResourceArn=arn),
        lambda: rbin.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "b"}]),
        lambda: rbin.untag_resource(ResourceArn=arn, TagKeys=["a"]),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert _error(refused)[0] == "ResourceNotFoundException"


def test_rule_parameters_are_checked(fast: Server) -> None:
    rbin = rbin_client(fast.url, validate=False)
    invalid = ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
    tag = [{"ResourceTagKey": "keep", "ResourceTagValue": "true"}]
    for request in [
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(366)},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(0)},
        {"ResourceType": "EBS_VOLUME", "RetentionPeriod": _days(8)},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1), "ResourceTags": tag,
         "ExcludeResourceTags": tag},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1), "ResourceTags": tag,
         "LockConfiguration": _delay(7)},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1),
         "ExcludeResourceTags": tag, "LockConfiguration": _delay(7)},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1),
         "LockConfiguration": _delay(31)},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": {"RetentionPeriodValue": 1}},
        {"ResourceType": "NOT_A_TYPE", "RetentionPeriod": _days(1)},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1),
         "Tags": [{"Key": "bad\u0001key", "Value": "x"}]},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1),
         "Tags": [{"Key": "aws:reserved", "Value": "x"}]},
        {"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": _days(1), "Description": "a\tb"},
    ]:  # fmt: skip
        with pytest.raises(ClientError) as refused:
            rbin.create_rule(**request)
            pytest.fail(f"accepted: {request}")
        assert _error(refused) == invalid, request
    assert rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"] == []

    rule = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(1))["Identifier"]
    with pytest.raises(ClientError) as refused:
        rbin.get_rule(Identifier="short")
    assert _error(refused) == invalid
    with pytest.raises(ClientError) as refused:
        rbin.update_rule(Identifier=rule, ResourceType="EC2_IMAGE")
    assert _error(refused) == invalid
    with pytest.raises(ClientError) as refused:
        rbin.update_rule(Identifier=rule, RetentionPeriod=_days(400))
    assert _error(refused) == invalid
    with pytest.raises(ClientError) as refused:
        rbin.list_rules(ResourceType="EBS_SNAPSHOT", NextToken="bm90LWEtdG9rZW4=")
    assert _error(refused) == ("ValidationException", "INVALID_PAGE_TOKEN", 400)
    with pytest.raises(ClientError) as refused:
        rbin.list_tags_for_resource(ResourceArn="arn:aws:ec2:us-east-1:123456789012:rule/x")
    assert _error(refused)[0] == "ValidationException"
    other = f"arn:aws:rbin:eu-west-1:123456789012:rule/{rule}"
    with pytest.raises(ClientError) as refused:
        rbin.list_tags_for_resource(ResourceArn=other)
    assert _error(refused)[0] == "ResourceNotFoundException"


def test_service_quotas(fast: Server) -> None:
    rbin = rbin_client(fast.url)
    tag = [{"ResourceTagKey": "keep", "ResourceTagValue": "true"}]
    for _ in range(5):
        rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(1), ResourceTags=tag)
    with pytest.raises(ClientError) as refused:
        rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(1), ResourceTags=tag)
    assert _error(refused) == ("ServiceQuotaExceededException", "SERVICE_QUOTA_EXCEEDED", 402)
    for _ in range(245):
        rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(1))
    with pytest.raises(ClientError) as refused:
        rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(1))
    assert _error(refused)[0] == "ServiceQuotaExceededException"
    rule_arn = rbin.list_rules(ResourceType="EC2_IMAGE", MaxResults=1)["Rules"][0]["RuleArn"]
    rbin.tag_resource(ResourceArn=rule_arn, Tags=[{"Key": f"k{i}", "Value": ""} for i in range(50)])
    with pytest.raises(ClientError) as refused:
        rbin.tag_resource(ResourceArn=rule_arn, Tags=[{"Key": "one-more", "Value": ""}])
    assert _error(refused)[0] == "ServiceQuotaExceededException"


def test_rule_lock_unlock_delay_and_relock(fast: Server) -> None:
    rbin = rbin_client(fast.url)
    created = rbin.create_rule(
        ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(5), LockConfiguration=_delay(7)
    )
    rule = created["Identifier"]
    assert created["LockState"] == "locked" and created["LockConfiguration"] == _delay(7)
    conflict = ("ConflictException", "INVALID_RULE_STATE", 409)
    for call in (
        lambda: rbin.update_rule(Identifier=rule, RetentionPeriod=_days(6)),
        lambda: rbin.delete_rule(Identifier=rule),
        lambda: rbin.lock_rule(Identifier=rule, LockConfiguration=_delay(7)),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert _error(refused) == conflict
    locked = rbin.list_rules(ResourceType="EBS_SNAPSHOT", LockState="locked")["Rules"]
    assert [r["Identifier"] for r in locked] == [rule]

    unlocked = rbin.unlock_rule(Identifier=rule)
    assert unlocked["LockState"] == "pending_unlock" and "LockEndTime" in unlocked
    assert rbin.get_rule(Identifier=rule)["LockEndTime"] == unlocked["LockEndTime"]
    with pytest.raises(ClientError) as refused:
        rbin.delete_rule(Identifier=rule)  # still within the unlock delay
    assert _error(refused) == conflict
    with pytest.raises(ClientError) as refused:
        rbin.unlock_rule(Identifier=rule)
    assert _error(refused) == conflict
    with pytest.raises(ClientError) as refused:
        rbin.lock_rule(Identifier=rule, LockConfiguration=_delay(8))  # the delay is fixed
    assert _error(refused)[0] == "ValidationException"
    # Relocking within the delay is allowed and ends it.
    assert rbin.lock_rule(Identifier=rule, LockConfiguration=_delay(7))["LockState"] == "locked"
    assert "LockEndTime" not in rbin.get_rule(Identifier=rule)

    rbin.unlock_rule(Identifier=rule)
    wait_for(lambda: rbin.get_rule(Identifier=rule)["LockState"] == "unlocked", timeout=5)
    assert "LockEndTime" not in rbin.get_rule(Identifier=rule)
    assert rbin.update_rule(Identifier=rule, RetentionPeriod=_days(6))["LockState"] == "unlocked"
    with pytest.raises(ClientError) as refused:
        rbin.unlock_rule(Identifier=rule)
    assert _error(refused) == conflict
    with pytest.raises(ClientError) as refused:  # tag-level rules can't be locked
        tagged = rbin.create_rule(
            ResourceType="EBS_SNAPSHOT",
            RetentionPeriod=_days(1),
            ResourceTags=[{"ResourceTagKey": "a", "ResourceTagValue": "b"}],
        )["Identifier"]
        rbin.lock_rule(Identifier=tagged, LockConfiguration=_delay(7))
    assert _error(refused)[0] == "ValidationException"
    rbin.delete_rule(Identifier=rule)


def test_deleted_snapshot_goes_to_the_bin_and_is_restored(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(365))
    volume_id = new_volume(ec2)
    snapshot_id = ec2.create_snapshot(
        VolumeId=volume_id,
        Description="nightly",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}],
    )["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])

    ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert not _exists(ec2, snapshot_id)
    assert snapshot_id not in {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"]}
    binned = _in_bin(ec2)[snapshot_id]
    assert binned["Description"] == "nightly" and binned["VolumeId"] == volume_id
    kept = (binned["RecycleBinExitTime"] - binned["RecycleBinEnterTime"]).total_seconds()
    assert abs(kept - 365 * 86400 / SCALE) < 0.01
    assert list(_in_bin(ec2)) == [
        s["SnapshotId"]
        for s in ec2.list_snapshots_in_recycle_bin(SnapshotIds=[snapshot_id])["Snapshots"]
    ]
    # In the bin it can only be listed and restored.
    with pytest.raises(ClientError) as refused:
        ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)
    assert refused.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    # ... and its tags changed.
    ec2.create_tags(Resources=[snapshot_id], Tags=[{"Key": "while", "Value": "binned"}])
    ec2.delete_tags(Resources=[snapshot_id], Tags=[{"Key": "while"}])
    with pytest.raises(ClientError) as refused:
        ec2.restore_snapshot_from_recycle_bin(SnapshotId=snapshot_id, DryRun=True)
    assert refused.value.response["Error"]["Code"] == "DryRunOperation"

    restored = ec2.restore_snapshot_from_recycle_bin(SnapshotId=snapshot_id)
    assert restored["State"] == "recovering" and restored["VolumeId"] == volume_id
    assert restored["Description"] == "nightly" and restored["VolumeSize"] == 1
    assert snapshot_id not in _in_bin(ec2)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snapshot["Tags"] == [{"Key": "k", "Value": "v"}] and snapshot["Progress"] == "100%"
    with pytest.raises(ClientError) as refused:
        ec2.restore_snapshot_from_recycle_bin(SnapshotId=snapshot_id)
    assert refused.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"
    new_volume(ec2, SnapshotId=snapshot_id)  # usable again


def test_tag_level_rules_exclusions_and_longest_retention(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    rbin.create_rule(
        ResourceType="EBS_SNAPSHOT",
        RetentionPeriod=_days(300),
        ResourceTags=[{"ResourceTagKey": "keep", "ResourceTagValue": "long"}],
    )
    rbin.create_rule(
        ResourceType="EBS_SNAPSHOT",
        RetentionPeriod=_days(140),
        ResourceTags=[
            {"ResourceTagKey": "keep", "ResourceTagValue": "short"},
            {"ResourceTagKey": "keep", "ResourceTagValue": "long"},
        ],
    )
    rbin.create_rule(ResourceType="EC2_IMAGE", RetentionPeriod=_days(300))  # not for snapshots
    long_kept, short_kept, untagged = (
        _snapshot(ec2, keep="long"),
        _snapshot(ec2, keep="short"),
        _snapshot(ec2),
    )
    for snapshot_id in (long_kept, short_kept, untagged):
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    binned = _in_bin(ec2)
    assert set(binned) == {long_kept, short_kept}

    def kept(snapshot_id: str) -> float:
        item = binned[snapshot_id]
        return float((item["RecycleBinExitTime"] - item["RecycleBinEnterTime"]).total_seconds())

    assert abs(kept(long_kept) - 300 * 86400 / SCALE) < 0.01  # the longer of the two matching
    assert abs(kept(short_kept) - 140 * 86400 / SCALE) < 0.01

    # A Region-level rule keeps everything but what its exclusion tags name.
    rbin.create_rule(
        ResourceType="EBS_SNAPSHOT",
        RetentionPeriod=_days(100),
        ExcludeResourceTags=[{"ResourceTagKey": "scratch", "ResourceTagValue": "yes"}],
    )
    plain, scratch = _snapshot(ec2), _snapshot(ec2, scratch="yes")
    ec2.delete_snapshot(SnapshotId=plain)
    ec2.delete_snapshot(SnapshotId=scratch)
    assert plain in _in_bin(ec2) and scratch not in _in_bin(ec2) and not _exists(ec2, scratch)


def test_snapshot_deleted_while_pending_goes_to_the_bin_once_completed(fast: Server) -> None:
    rbin, ec2, ebs = rbin_client(fast.url), fast.client(), ebs_client(fast.url)
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(365))
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]  # pending until completed
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"] == "pending"
    assert _in_bin(ec2) == {}
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    wait_for(lambda: snapshot_id in _in_bin(ec2))
    assert not _exists(ec2, snapshot_id)


def test_the_bin_lists_in_pages(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(365))
    volume_id = new_volume(ec2)
    made = [ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"] for _ in range(6)]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=made)
    for snapshot_id in made:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    first = ec2.list_snapshots_in_recycle_bin(MaxResults=5)
    second = ec2.list_snapshots_in_recycle_bin(MaxResults=5, NextToken=first["NextToken"])
    assert len(first["Snapshots"]) == 5 and "NextToken" not in second
    assert sorted(s["SnapshotId"] for s in first["Snapshots"] + second["Snapshots"]) == sorted(made)
    with pytest.raises(ClientError) as refused:
        fast.client(parameter_validation=False).list_snapshots_in_recycle_bin(MaxResults=4)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as refused:
        ec2.list_snapshots_in_recycle_bin(NextToken="bm90LWEtdG9rZW4=")
    assert refused.value.response["Error"]["Code"] == "InvalidPaginationToken"
    with pytest.raises(ClientError) as refused:
        ec2.list_snapshots_in_recycle_bin(SnapshotIds=["snap-bad"])
    assert refused.value.response["Error"]["Code"] == "InvalidSnapshotID.Malformed"
    assert (
        ec2.list_snapshots_in_recycle_bin(SnapshotIds=[made[0]])["Snapshots"][0]["SnapshotId"]
        == made[0]
    )


def test_rules_belong_to_the_region_of_the_signature(fast: Server) -> None:
    rbin_client(fast.url).create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(365))
    ireland = rbin_client(fast.url, region="eu-west-1")
    assert ireland.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"] == []
    ec2 = region_client(fast.url, "eu-west-1")
    volume_id = new_volume(ec2, zone="eu-west-1a")
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    ec2.delete_snapshot(SnapshotId=snapshot_id)  # no rule in eu-west-1: gone for good
    assert _in_bin(ec2) == {} and not _exists(ec2, snapshot_id)
    ireland.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(365))
    assert ireland.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"][0]["RuleArn"].startswith(
        "arn:aws:rbin:eu-west-1:"
    )


def test_locked_snapshot_delete_stays_refused_and_purge_ends_the_snapshot(fast: Server) -> None:
    rbin, ec2 = rbin_client(fast.url), fast.client()
    rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(7))
    locked = _snapshot(ec2)
    ec2.lock_snapshot(SnapshotId=locked, LockMode="governance", LockDuration=30)
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=locked)
    assert refused.value.response["Error"]["Code"] == "SnapshotLocked"
    assert locked not in _in_bin(ec2) and _exists(ec2, locked)

    doomed = _snapshot(ec2)
    ec2.delete_snapshot(SnapshotId=doomed)
    assert doomed in _in_bin(ec2)
    wait_for(lambda: doomed not in _in_bin(ec2), timeout=10)  # 7 days: a second here
    assert not _exists(ec2, doomed)
    with pytest.raises(ClientError) as refused:
        ec2.restore_snapshot_from_recycle_bin(SnapshotId=doomed)
    assert refused.value.response["Error"]["Code"] == "InvalidSnapshot.NotFound"


def test_bin_survives_kill_and_its_purge_timer_resumes(start_server: ServerFactory) -> None:
    server = start_server(*WEEK_A_SECOND)
    rbin, ec2 = rbin_client(server.url), server.client()
    rule = rbin.create_rule(
        ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(90), LockConfiguration=_delay(7)
    )["Identifier"]
    snapshot_id = _snapshot(ec2)
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    exit_time = _in_bin(ec2)[snapshot_id]["RecycleBinExitTime"]
    server.kill()
    server.start()
    rbin, ec2 = rbin_client(server.url), server.client()
    assert rbin.get_rule(Identifier=rule)["LockState"] == "locked"
    assert _in_bin(ec2)[snapshot_id]["RecycleBinExitTime"] == exit_time
    assert not _exists(ec2, snapshot_id)
    wait_for(lambda: snapshot_id not in _in_bin(ec2), timeout=40)
    assert not _exists(ec2, snapshot_id)
    assert "Traceback" not in server.log(), server.log()


def test_aws_cli_creates_a_rule_and_lists_the_bin(fast: Server) -> None:
    created = aws(
        fast,
        "create-rule",
        "--resource-type", "EBS_SNAPSHOT",
        "--retention-period", "RetentionPeriodValue=365,RetentionPeriodUnit=DAYS",
        "--description", "from the cli",
        service="rbin",
    )  # fmt: skip
    assert created["Status"] == "available"
    assert (
        aws(fast, "get-rule", "--identifier", created["Identifier"], service="rbin")["Description"]
        == "from the cli"
    )
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2)
    aws(fast, "delete-snapshot", "--snapshot-id", snapshot_id)
    listed = aws(fast, "list-snapshots-in-recycle-bin")
    assert [s["SnapshotId"] for s in listed["Snapshots"]] == [snapshot_id]
    restored = aws(fast, "restore-snapshot-from-recycle-bin", "--snapshot-id", snapshot_id)
    assert restored["State"] == "recovering"
    aws(fast, "delete-rule", "--identifier", created["Identifier"], service="rbin")
    assert aws(fast, "list-rules", "--resource-type", "EBS_SNAPSHOT", service="rbin")["Rules"] == []


def _signed(url: str, method: str, body: bytes | None = None) -> urllib.request.Request:
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDFAKESTOR/20261127/us-east-1/rbin/"
        "aws4_request, SignedHeaders=host, Signature=0",
        "Content-Type": "application/json",
    }
    return urllib.request.Request(url, data=body, headers=headers, method=method)


def test_errors_are_json_with_the_error_type(fast: Server) -> None:
    for request, status, error_type in [
        (_signed(f"{fast.url}/rules/abcdefghijk/nothing", "GET"), 404, "UnknownOperationException"),
        (_signed(f"{fast.url}/rules", "POST", b"{not json"), 400, "ValidationException"),
        (_signed(f"{fast.url}/rules", "POST", b'{"ResourceType": "EBS_SNAPSHOT"}'), 400,
         "ValidationException"),
        (_signed(f"{fast.url}/list-rules", "POST", b'{"ResourceType": 7}'), 400,
         "ValidationException"),
    ]:  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == status
        assert refused.value.headers["x-amzn-ErrorType"] == error_type
        assert refused.value.headers["Content-Type"] == "application/json"
        json.loads(refused.value.read())
    # Unsigned, or signed for EC2, these paths are not the Recycle Bin.
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(f"{fast.url}/rules")
    assert b"<html" not in unsigned.value.read().lower()
