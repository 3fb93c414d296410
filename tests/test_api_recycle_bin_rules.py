"""The Recycle Bin rules API through boto3's `rbin` client (metadata backend): every rules
action, the lock and its unlock delay, quotas, and errors as the model defines them, as JSON
with x-amzn-ErrorType."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, Server, ServerFactory, wait_for
from tests.test_api_recycle_bin import WEEK_A_SECOND, _days, _delay, _error, rbin_client


@pytest.fixture
def fast(start_server: ServerFactory) -> Iterator[Server]:
    server = start_server(*WEEK_A_SECOND)
    yield server
    assert "Traceback" not in server.log(), server.log()


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


def test_signed_requests_verify_with_an_escaped_rule_arn(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("AKIDFAKESTOR fakestor-secret\n")
    server = start_server(*WEEK_A_SECOND, "--credentials", str(credentials))
    rbin = rbin_client(server.url)
    arn = rbin.create_rule(ResourceType="EBS_SNAPSHOT", RetentionPeriod=_days(1))["RuleArn"]
    # The ARN travels in the path with its ':' and '/' escaped; the signature covers that.
    rbin.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "b"}])
    assert rbin.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "a", "Value": "b"}]
    rbin.untag_resource(ResourceArn=arn, TagKeys=["a"])
    forged = boto3.client(
        "rbin",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="not-the-secret",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        forged.list_tags_for_resource(ResourceArn=arn)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "Traceback" not in server.log(), server.log()
