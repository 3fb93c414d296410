"""The Recycle Bin through boto3's `rbin` and `ec2` clients and the aws CLI (metadata backend):
deleted snapshots kept in the bin, restored or purged when their retention ends, and the bin
resumed after kill -9 (the rules API itself: test_api_recycle_bin_rules.py).

Servers run with --time-scale 604800 (an EC2 week takes a second, no step under 0.5 s): a
7-day unlock delay or retention lasts a second here, 365 days 52 s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, ZONE, Server, ServerFactory, fast_waiter, new_volume, wait_for
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
    ec2.enable_fast_snapshot_restores(AvailabilityZones=[ZONE], SourceSnapshotIds=[snapshot_id])

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
    # Fast snapshot restore ended when the snapshot entered the bin.
    assert ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"] == []


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
