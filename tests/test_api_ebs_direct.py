"""The EBS direct APIs through boto3's `ebs` client: the protocol, the snapshot record they
share with EC2, and their errors (metadata backend: no data, blocks read as zeros)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, Server, ServerFactory, fast_waiter, wait_for

BLOCK = 512 * 1024


def ebs_client(url: str) -> Any:
    return boto3.client(
        "ebs",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def ebs(server: Server) -> Any:
    return ebs_client(server.url)


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def put(ebs: Any, snapshot_id: str, index: int, data: bytes, **extra: Any) -> Any:
    return ebs.put_snapshot_block(
        SnapshotId=snapshot_id,
        BlockIndex=index,
        BlockData=data,
        DataLength=len(data),
        Checksum=extra.pop("Checksum", checksum(data)),
        ChecksumAlgorithm="SHA256",
        **extra,
    )


def refused(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as error:
        call(**kwargs)
    response: dict[str, Any] = error.value.response
    assert (
        response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"]
        == (response["Error"]["Code"])
    )
    return response


def test_a_started_snapshot_is_pending_in_ec2_and_completes(ebs: Any, ec2: Any) -> None:
    started = ebs.start_snapshot(
        VolumeSize=2, Description="direct", Tags=[{"Key": "team", "Value": "a"}], Timeout=30
    )
    snapshot_id = started["SnapshotId"]
    assert started["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert started["Status"] == "pending" and started["BlockSize"] == BLOCK
    assert started["VolumeSize"] == 2 and started["Tags"] == [{"Key": "team", "Value": "a"}]
    described = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert described["State"] == "pending" and described["VolumeId"] == "vol-ffffffff"
    assert described["Description"] == "direct"

    data = os.urandom(BLOCK)
    answer = put(ebs, snapshot_id, 5, data, Progress=50)
    assert answer["Checksum"] == checksum(data) and answer["ChecksumAlgorithm"] == "SHA256"
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["Progress"] == "50%"

    wrong = refused(ebs.complete_snapshot, SnapshotId=snapshot_id, ChangedBlocksCount=2)
    assert wrong["Error"]["Code"] == "ValidationException"
    assert "ChangedBlocksCount is 2, but 1 blocks" in wrong["Error"]["Message"]
    assert wrong["Reason"] == "INVALID_PARAMETER_VALUE"

    linear = checksum(hashlib.sha256(data).digest())
    done = ebs.complete_snapshot(
        SnapshotId=snapshot_id,
        ChangedBlocksCount=1,
        Checksum=linear,
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )
    assert done["ResponseMetadata"]["HTTPStatusCode"] == 202
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert listed["Blocks"] == [] and listed["VolumeSize"] == 2  # the metadata backend
    volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", SnapshotId=snapshot_id)["VolumeId"]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    ec2.delete_volume(VolumeId=volume_id)
    ec2.delete_snapshot(SnapshotId=snapshot_id)


def test_client_token_returns_the_same_snapshot_or_a_conflict(ebs: Any) -> None:
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="direct-token-1")
    again = ebs.start_snapshot(VolumeSize=1, ClientToken="direct-token-1")
    assert again["SnapshotId"] == first["SnapshotId"]
    conflict = refused(ebs.start_snapshot, VolumeSize=3, ClientToken="direct-token-1")
    assert conflict["Error"]["Code"] == "ConflictException"
    assert conflict["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_write_errors(ebs: Any) -> None:
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = os.urandom(BLOCK)
    tampered = refused(
        put, ebs=ebs, snapshot_id=snapshot_id, index=0, data=data, Checksum=checksum(b"x")
    )
    assert tampered["Error"]["Code"] == "ValidationException"
    assert "does not match the SHA256" in tampered["Error"]["Message"]
    short = refused(put, ebs=ebs, snapshot_id=snapshot_id, index=0, data=data[:4096])
    assert "A block is 524288 bytes" in short["Error"]["Message"]
    beyond = refused(put, ebs=ebs, snapshot_id=snapshot_id, index=2048, data=data)
    assert beyond["Reason"] == "INVALID_BLOCK"
    missing = refused(put, ebs=ebs, snapshot_id="snap-0123456789abcdef0", index=0, data=data)
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    assert missing["Reason"] == "SNAPSHOT_NOT_FOUND"
    too_big = refused(ebs.start_snapshot, VolumeSize=65537)
    assert too_big["Reason"] == "INVALID_VOLUME_SIZE"
    no_parent = refused(ebs.start_snapshot, VolumeSize=1, ParentSnapshotId="snap-0123456789abcdef0")
    assert no_parent["Error"]["Code"] == "ResourceNotFoundException"


def test_read_errors(ebs: Any) -> None:
    pending = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    unreadable = refused(ebs.list_snapshot_blocks, SnapshotId=pending)
    assert unreadable["Reason"] == "INVALID_SNAPSHOT_ID"
    assert "only completed snapshots can be read" in unreadable["Error"]["Message"]
    forged = refused(ebs.get_snapshot_block, SnapshotId=pending, BlockIndex=0, BlockToken="AAAA")
    assert forged["Reason"] == "INVALID_BLOCK_TOKEN"
    bad_page = refused(ebs.list_snapshot_blocks, SnapshotId=pending, NextToken="AAAA")
    assert bad_page["Error"]["Code"] == "ValidationException"
    absent = refused(ebs.list_changed_blocks, SecondSnapshotId="snap-0123456789abcdef0")
    assert absent["Error"]["Code"] == "ResourceNotFoundException"


def test_unrelated_snapshots_have_no_changed_blocks_list(ebs: Any, ec2: Any) -> None:
    made = []
    for _ in range(2):
        snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
        made.append(snapshot_id)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=made)
    unrelated = refused(ebs.list_changed_blocks, FirstSnapshotId=made[0], SecondSnapshotId=made[1])
    assert unrelated["Reason"] == "UNRELATED_SNAPSHOTS"
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=made[0])
    assert child["ParentSnapshotId"] == made[0]
    ebs.complete_snapshot(SnapshotId=child["SnapshotId"], ChangedBlocksCount=0)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[child["SnapshotId"]])
    related = ebs.list_changed_blocks(FirstSnapshotId=made[0], SecondSnapshotId=child["SnapshotId"])
    assert related["ChangedBlocks"] == []


def test_errors_are_json_never_html(server: Server) -> None:
    # Unsigned or signed for another service, these paths are not the EBS direct APIs.
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(f"{server.url}/snapshots/snap-0123456789abcdef0/blocks")
    assert b"<html" not in unsigned.value.read().lower()
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDFAKESTOR/20261127/us-east-1/ebs/"
        "aws4_request, SignedHeaders=host, Signature=0"
    }
    request = urllib.request.Request(f"{server.url}/snapshots/nothing/here", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(request)
    assert unknown.value.code == 404
    assert unknown.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert "GET /snapshots/nothing/here" in json.loads(unknown.value.read())["message"]


def test_start_snapshot_refuses_above_the_pending_snapshots_quota(
    start_server: ServerFactory,
) -> None:
    server = start_server("--pending-snapshot-quota", "2")
    ebs, ec2 = ebs_client(server.url), server.client()
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="quota-1")["SnapshotId"]
    ebs.start_snapshot(VolumeSize=1)
    over = refused(ebs.start_snapshot, VolumeSize=1)
    assert over["Error"]["Code"] == "ServiceQuotaExceededException"
    assert over["Reason"] == "DEPENDENCY_SERVICE_QUOTA_EXCEEDED"
    assert over["ResponseMetadata"]["HTTPStatusCode"] == 402
    assert "quota of pending snapshots (2)" in over["Error"]["Message"]
    # A retry of a start that was accepted is still answered: it starts nothing new.
    assert ebs.start_snapshot(VolumeSize=1, ClientToken="quota-1")["SnapshotId"] == first
    ebs.complete_snapshot(SnapshotId=first, ChangedBlocksCount=0)
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[first])
    assert ebs.start_snapshot(VolumeSize=1)["Status"] == "pending"


def _snapshot(ec2: Any, snapshot_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    return found


def test_an_unfinished_snapshot_times_out_into_error_also_after_a_restart(
    start_server: ServerFactory,
) -> None:
    # --time-scale 600: Timeout=10 (minutes, the model's least) is 1 s, raised to the
    # shortest write window of 10 s.
    server = start_server("--time-scale", "600")
    ebs, ec2 = ebs_client(server.url), server.client()
    kept = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    data = os.urandom(BLOCK)
    for index in range(4):  # a block every 4 s keeps it open for longer than one window
        put(ebs, kept, index, data)
        time.sleep(4)
    assert _snapshot(ec2, kept)["State"] == "pending"
    abandoned = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
    server.kill()
    server.start()
    ec2, ebs = server.client(), ebs_client(server.url)
    started = time.monotonic()
    wait_for(lambda: _snapshot(ec2, abandoned)["State"] == "error", timeout=30)
    assert time.monotonic() - started >= 5  # the window opened again at the restart
    assert "timeout of 10 minutes" in _snapshot(ec2, abandoned)["StateMessage"]
    closed = refused(put, ebs=ebs, snapshot_id=abandoned, index=0, data=data)
    assert closed["Error"]["Code"] == "ValidationException"
    wait_for(lambda: _snapshot(ec2, kept)["State"] == "error", timeout=30)
