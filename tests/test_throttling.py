"""Request throttling (`fakestor server --request-rate`): the token buckets, and what EC2,
EBS direct and Recycle Bin clients see above the rate, with and without botocore's retry handler."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fakestor.throttling import RateSpecError, Throttle, parse_rate
from tests.conftest import REGION, ServerFactory, wait_for

# ---- the buckets ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_specs_are_read_and_bad_ones_refused() -> None:
    rate = parse_rate("ec2:DescribeVolumes=5/s")
    assert (rate.service, rate.action, rate.per_second, rate.burst) == (
        "ec2", "DescribeVolumes", 5.0, 5.0,
    )  # fmt: skip
    assert parse_rate("ebs:*=120/m,burst=7").per_second == 2.0
    assert parse_rate("ebs:*=120/m,burst=7").burst == 7
    for bad in ("DescribeVolumes=5/s", "ec2:DescribeVolumes=5", "ec2:X=0/s", "ec2:X=5/h", ""):
        with pytest.raises(RateSpecError):
            parse_rate(bad)


def test_a_bucket_lets_its_burst_through_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    throttle = Throttle([parse_rate("ec2:DescribeVolumes=2/s,burst=3")], clock)
    assert [throttle.admit("ec2", "DescribeVolumes", REGION) for _ in range(4)] == [
        True, True, True, False,
    ]  # fmt: skip
    clock.now += 0.5  # one token back
    assert throttle.admit("ec2", "DescribeVolumes", REGION)
    assert not throttle.admit("ec2", "DescribeVolumes", REGION)
    clock.now += 60  # never more than the burst
    assert sum(throttle.admit("ec2", "DescribeVolumes", REGION) for _ in range(10)) == 3


def test_an_action_uses_its_own_rate_before_a_glob_and_a_glob_is_one_bucket() -> None:
    clock = FakeClock()
    throttle = Throttle([parse_rate("ec2:*=2/s"), parse_rate("ec2:DescribeVolumes=5/s")], clock)
    assert sum(throttle.admit("ec2", "DescribeVolumes", REGION) for _ in range(10)) == 5
    # DescribeSnapshots and CreateVolume share the glob's bucket of 2.
    assert throttle.admit("ec2", "DescribeSnapshots", REGION)
    assert throttle.admit("ec2", "CreateVolume", REGION)
    assert not throttle.admit("ec2", "DescribeSnapshots", REGION)
    # Other services and other regions have buckets of their own.
    assert throttle.admit("ebs", "GetSnapshotBlock", REGION)
    assert throttle.admit("ec2", "CreateVolume", "eu-west-1")


def test_the_server_refuses_a_bad_rate_before_starting(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakestor", "server", "--data-dir", str(tmp_path / "d"),
         "--backend", "metadata", "--request-rate", "ec2:DescribeVolumes=lots"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--request-rate" in result.stderr and "N/s" in result.stderr
    assert not (tmp_path / "d").exists()


# ---- through boto3 -------------------------------------------------------------------


def _client(service: str, url: str, retries: dict[str, Any]) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries=retries),
    )


def _retried(client: Any, call: str, count: int, **kwargs: Any) -> int:
    """Make `count` calls that must all succeed; returns the retries botocore needed."""
    return sum(
        getattr(client, call)(**kwargs)["ResponseMetadata"]["RetryAttempts"] for _ in range(count)
    )


# The refusals use a rate no client can stay under (1/m); the retries a slow one (0.5/s,
# one at a time), which sequential calls outrun however loaded the machine is.


def test_ec2_answers_request_limit_exceeded_above_the_rate_and_retries_get_through(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        "--request-rate", "ec2:DescribeVolumes=1/m,burst=2",
        "--request-rate", "ec2:DescribeSnapshots=0.5/s,burst=1",
    )  # fmt: skip
    once = _client("ec2", server.url, {"max_attempts": 1})
    once.describe_volumes()
    once.describe_volumes()
    with pytest.raises(ClientError) as error:
        once.describe_volumes()
    response = error.value.response
    assert response["Error"]["Code"] == "RequestLimitExceeded"
    assert response["Error"]["Message"] == "Request limit exceeded."
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 503
    for _ in range(5):  # actions without a rate are not throttled
        once.describe_availability_zones()
    standard = _client("ec2", server.url, {"mode": "standard", "max_attempts": 10})
    assert _retried(standard, "describe_snapshots", 4, OwnerIds=["self"]) > 0


def test_ebs_direct_answers_request_throttled_above_the_rate_and_retries_get_through(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        "--request-rate", "ebs:ListSnapshotBlocks=1/m,burst=2",
        "--request-rate", "ebs:ListChangedBlocks=0.5/s,burst=1",
    )  # fmt: skip
    once = _client("ebs", server.url, {"max_attempts": 1})
    snapshot_id = once.start_snapshot(VolumeSize=1)["SnapshotId"]
    once.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    ec2 = server.client()
    wait_for(
        lambda: (
            ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
            == "completed"
        )
    )
    once.list_snapshot_blocks(SnapshotId=snapshot_id)
    once.list_snapshot_blocks(SnapshotId=snapshot_id)
    with pytest.raises(ClientError) as error:
        once.list_snapshot_blocks(SnapshotId=snapshot_id)
    response = error.value.response
    assert response["Error"]["Code"] == "RequestThrottledException"
    assert response["Reason"] == "ACCOUNT_THROTTLED"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400  # the model's status
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "RequestThrottledException"
    )
    standard = _client("ebs", server.url, {"mode": "standard", "max_attempts": 10})
    assert _retried(standard, "list_changed_blocks", 4, SecondSnapshotId=snapshot_id) > 0


def test_recycle_bin_answers_throttling_above_the_rate_and_retries_get_through(
    start_server: ServerFactory,
) -> None:
    server = start_server("--request-rate", "rbin:ListRules=0.5/s,burst=1")
    once = _client("rbin", server.url, {"max_attempts": 1})
    once.list_rules(ResourceType="EBS_SNAPSHOT")
    with pytest.raises(ClientError) as error:
        once.list_rules(ResourceType="EBS_SNAPSHOT")
    response = error.value.response
    assert response["Error"]["Code"] == "ThrottlingException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    standard = _client("rbin", server.url, {"mode": "standard", "max_attempts": 10})
    assert _retried(standard, "list_rules", 4, ResourceType="EBS_SNAPSHOT") > 0
