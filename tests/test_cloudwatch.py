"""CloudWatch's AWS/EBS metrics: the API through boto3 and the aws CLI (Smithy RPC v2 CBOR,
as botocore speaks it), and figures that agree with the I/O a test did on a real device."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, ZONE, Server, ServerFactory, fast_waiter
from tests.test_loopdev import BACKENDS, Host, machine


def cloudwatch(url: str) -> Any:
    return boto3.client(
        "cloudwatch", endpoint_url=url, region_name=REGION, aws_access_key_id="fakestor",
        aws_secret_access_key="fakestor", config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def error_of(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


NOW = datetime.now(UTC)
VOLUME = [{"Name": "VolumeId", "Value": "vol-0123456789abcdef0"}]


def test_an_empty_account_lists_no_metrics(server: Server) -> None:
    client = cloudwatch(server.url)
    assert client.list_metrics(Namespace="AWS/EBS")["Metrics"] == []
    assert client.list_metrics(Namespace="AWS/EC2")["Metrics"] == []
    answer = client.get_metric_statistics(
        Namespace="AWS/EBS", MetricName="VolumeReadOps", Dimensions=VOLUME,
        StartTime=NOW - timedelta(hours=1), EndTime=NOW, Period=60, Statistics=["Sum"],
    )  # fmt: skip
    assert answer["Datapoints"] == [] and answer["Label"] == "VolumeReadOps"


def test_bad_requests_get_cloudwatch_errors(server: Server) -> None:
    client = cloudwatch(server.url)
    window = {"StartTime": NOW - timedelta(hours=1), "EndTime": NOW}
    base = {"Namespace": "AWS/EBS", "MetricName": "VolumeReadOps", "Dimensions": VOLUME}
    stats = client.get_metric_statistics
    assert error_of(stats, **base, **window, Period=60) == (
        "InvalidParameterCombination", "Must specify either Statistics or ExtendedStatistics"
    )  # fmt: skip
    code, message = error_of(stats, **base, **window, Period=61, Statistics=["Sum"])
    assert code == "InvalidParameterValue" and "Period" in message
    code, message = error_of(
        stats, **base, StartTime=NOW, EndTime=NOW - timedelta(hours=1), Period=60,
        Statistics=["Sum"],
    )  # fmt: skip
    assert code == "InvalidParameterValue" and "StartTime" in message
    code, message = error_of(
        stats, **base, StartTime=NOW - timedelta(days=2), EndTime=NOW, Period=60,
        Statistics=["Sum"],
    )  # fmt: skip
    assert code == "InvalidParameterCombination"
    assert "You have requested up to 2,880 datapoints" in message
    query = {
        "Id": "m1",
        "MetricStat": {"Metric": {"Namespace": "AWS/EBS", "MetricName": "VolumeReadOps",
                                  "Dimensions": VOLUME}, "Period": 60, "Stat": "Sum"},
    }  # fmt: skip
    code, _ = error_of(
        client.get_metric_data, MetricDataQueries=[{"Id": "e1", "Expression": "m1*2"}], **window
    )
    assert code == "InvalidParameterValue"
    code, _ = error_of(client.get_metric_data, MetricDataQueries=[{**query, "Id": "Bad"}], **window)
    assert code == "InvalidParameterValue"
    # Operations of CloudWatch fakestor does not serve say so, in the protocol.
    code, message = error_of(
        client.put_metric_data, Namespace="Mine", MetricData=[{"MetricName": "x", "Value": 1.0}]
    )
    assert code == "NotImplemented" and "GetMetricData" in message


def test_the_aws_cli_lists_metrics(server: Server) -> None:
    aws = shutil.which("aws", path=os.path.dirname(sys.executable))
    assert aws is not None
    result = subprocess.run(
        [aws, "cloudwatch", "list-metrics", "--namespace", "AWS/EBS", "--endpoint-url",
         server.url, "--output", "json"],
        capture_output=True, text=True,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "fakestor", "AWS_SECRET_ACCESS_KEY": "fakestor",
             "AWS_DEFAULT_REGION": REGION},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Metrics"] == []


@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.privileged) for b in BACKENDS])
def metered(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    with machine(
        start_server, tmp_path, request.param, args=("--metrics-interval", "1")
    ) as running:
        yield running


def _sum(client: Any, volume_id: str, metric: str, since: datetime) -> dict[str, Any]:
    answer = client.get_metric_statistics(
        Namespace="AWS/EBS", MetricName=metric,
        Dimensions=[{"Name": "VolumeId", "Value": volume_id}],
        StartTime=since, EndTime=datetime.now(UTC) + timedelta(minutes=1), Period=3600,
        Statistics=["Sum", "SampleCount", "Average"],
    )  # fmt: skip
    points = answer["Datapoints"]
    return {
        "Sum": sum(p["Sum"] for p in points),
        "SampleCount": sum(p["SampleCount"] for p in points),
        "Unit": points[0]["Unit"] if points else None,
    }


def test_metrics_count_the_io_done_on_the_device(metered: Host) -> None:
    ec2, client = metered.ec2, cloudwatch(metered.server.url)
    volume_id = ec2.create_volume(Size=4, AvailabilityZone=ZONE, VolumeType="io2", Iops=1000)[
        "VolumeId"
    ]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume_id])
    since = datetime.now(UTC) - timedelta(minutes=1)
    device = metered.attach(volume_id)
    time.sleep(1.5)  # a first reading of the device's counters before the I/O
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={device}", "bs=4096", "count=2000", "oflag=direct"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["dd", f"if={device}", "of=/dev/null", "bs=8192", "count=500", "iflag=direct"],
        check=True, capture_output=True,
    )  # fmt: skip
    time.sleep(2.5)  # the sampler's next readings
    writes = _sum(client, volume_id, "VolumeWriteOps", since)
    reads = _sum(client, volume_id, "VolumeReadOps", since)
    written = _sum(client, volume_id, "VolumeWriteBytes", since)
    read = _sum(client, volume_id, "VolumeReadBytes", since)
    # What dd did, and nothing else touched the raw device (udev is not running here).
    assert writes["Sum"] == 2000 and writes["Unit"] == "Count"
    assert reads["Sum"] == 500
    assert written == {"Sum": 2000 * 4096, "SampleCount": 2000, "Unit": "Bytes"}
    assert read["Sum"] == 500 * 8192 and read["SampleCount"] == 500
    consumed = _sum(client, volume_id, "VolumeConsumedReadWriteOps", since)
    assert consumed["Sum"] == 2500
    listed = client.list_metrics(
        Namespace="AWS/EBS", Dimensions=[{"Name": "VolumeId", "Value": volume_id}]
    )["Metrics"]
    names = {metric["MetricName"] for metric in listed}
    assert {"VolumeReadOps", "VolumeWriteOps", "VolumeIdleTime", "VolumeQueueLength",
            "VolumeThroughputPercentage", "VolumeConsumedReadWriteOps"} <= names  # fmt: skip
    assert "BurstBalance" not in names  # io2 has no burst bucket
    data = client.get_metric_data(
        MetricDataQueries=[{
            "Id": "writes",
            "MetricStat": {"Metric": {"Namespace": "AWS/EBS", "MetricName": "VolumeWriteOps",
                                      "Dimensions": [{"Name": "VolumeId", "Value": volume_id}]},
                           "Period": 60, "Stat": "Sum"},
        }],
        StartTime=since, EndTime=datetime.now(UTC) + timedelta(minutes=1),
    )["MetricDataResults"][0]  # fmt: skip
    assert data["StatusCode"] == "Complete" and sum(data["Values"]) == 2000
    assert data["Timestamps"] == sorted(data["Timestamps"], reverse=True)
    metered.detach(volume_id)


def _signed_cbor(url: str, operation: str, body: dict[str, Any]) -> Any:
    """A Smithy RPC v2 CBOR request, as newer SDKs send it, signed for `monitoring`."""
    import cbor2
    import requests
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=f"{url}/service/GraniteServiceVersion20100801/operation/{operation}",
        data=cbor2.dumps(body),
        headers={"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor",
                 "Accept": "application/cbor"},
    )  # fmt: skip
    SigV4Auth(Credentials("fakestor", "fakestor"), "monitoring", REGION).add_auth(request)
    reply = requests.post(request.url, data=request.body, headers=dict(request.headers))
    return reply.status_code, reply.headers, cbor2.loads(reply.content)


def test_the_smithy_rpc_v2_cbor_protocol(server: Server) -> None:
    status, headers, body = _signed_cbor(server.url, "ListMetrics", {"Namespace": "AWS/EBS"})
    assert status == 200 and headers["smithy-protocol"] == "rpc-v2-cbor"
    assert body == {"Metrics": []}
    status, headers, body = _signed_cbor(
        server.url, "GetMetricStatistics",
        {"Namespace": "AWS/EBS", "MetricName": "VolumeReadOps", "StartTime": NOW,
         "EndTime": NOW - timedelta(hours=1), "Period": 60, "Statistics": ["Sum"]},
    )  # fmt: skip
    assert status == 400
    assert body["__type"].endswith("#InvalidParameterValueException")
    assert headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"
    status, _, body = _signed_cbor(server.url, "NoSuchOperation", {})
    assert status == 404 and body["__type"] == "UnknownOperationException"
