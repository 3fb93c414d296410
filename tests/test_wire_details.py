"""Wire details that real SDKs read: request ids in headers, empty tag sets, times as the
client received them, and errors of services fakestor does not serve."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, Server, fast_waiter, new_volume


def test_every_response_carries_its_request_id_in_a_header(ec2: Any) -> None:
    answer = ec2.describe_volumes()["ResponseMetadata"]
    assert answer["HTTPHeaders"]["x-amzn-requestid"] == answer["RequestId"]
    with pytest.raises(ClientError) as refused:
        ec2.describe_volumes(VolumeIds=["vol-0123456789abcdef0"])
    metadata = refused.value.response["ResponseMetadata"]
    assert metadata["HTTPHeaders"]["x-amzn-requestid"] == metadata["RequestId"]


def test_create_snapshot_of_an_untagged_volume_answers_an_empty_tag_set(
    ec2: Any, server: Server
) -> None:
    volume_id = new_volume(ec2)
    assert ec2.create_snapshot(VolumeId=volume_id)["Tags"] == []
    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdz")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    try:
        made = ec2.create_snapshots(
            InstanceSpecification={"InstanceId": server.host_instance_id,
                                   "ExcludeDataVolumeIds": []},
        )["Snapshots"]  # fmt: skip
        assert made and all(snapshot["Tags"] == [] for snapshot in made)
    finally:
        ec2.detach_volume(VolumeId=volume_id)
        fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])


def _raw_create_time(server: Server, volume_id: str) -> str:
    """CreateTime exactly as the wire carried it, as an SDK that keeps the text sees it."""
    url = f"{server.url}/?Action=DescribeVolumes&Version=2016-11-15&VolumeId.1={volume_id}"
    with urllib.request.urlopen(url) as response:
        body = response.read().decode()
    match = re.search(r"<createTime>([^<]+)</createTime>", body)
    assert match, body
    return match.group(1)


def test_time_filters_match_the_times_clients_received(ec2: Any, server: Server) -> None:
    volume_id = new_volume(ec2)
    create_time = _raw_create_time(server, volume_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", create_time)

    def found(value: str) -> list[str]:
        volumes = ec2.describe_volumes(Filters=[{"Name": "create-time", "Values": [value]}])
        return [v["VolumeId"] for v in volumes["Volumes"]]

    assert volume_id in found(create_time)
    assert volume_id in found(create_time[:10] + "*")  # the day, with EC2's wildcard
    assert volume_id not in found("2001-01-01T00:00:00.000Z")

    snapshot = ec2.create_snapshot(VolumeId=volume_id)
    start = snapshot["StartTime"]  # botocore parsed it from the same text format
    text = start.strftime("%Y-%m-%dT%H:%M:%S.") + f"{start.microsecond // 1000:03d}Z"
    snapshots = ec2.describe_snapshots(Filters=[{"Name": "start-time", "Values": [text]}])
    assert snapshot["SnapshotId"] in [s["SnapshotId"] for s in snapshots["Snapshots"]]


def test_a_service_fakestor_does_not_serve_answers_in_its_own_protocol(server: Server) -> None:
    # Data Lifecycle Manager (rest-json): a service fakestor does not serve.
    dlm = boto3.client(
        "dlm",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id="AKIDFAKESTOR",
        aws_secret_access_key="fakestor-secret",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        dlm.get_lifecycle_policies()
    error = refused.value.response["Error"]
    assert error["Code"] == "NotImplemented"
    assert "does not implement this dlm API yet" in error["Message"]
    assert "GET /policies" in error["Message"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_an_unknown_path_gets_an_ec2_error_not_an_html_page(server: Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.url}/no/such/path")
    assert refused.value.code == 400
    assert refused.value.headers["Content-Type"].startswith("text/xml")
    body = refused.value.read().decode()
    assert "<Code>InvalidAction</Code>" in body and "GET /no/such/path" in body
    assert "<html" not in body.lower()
