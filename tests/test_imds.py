"""Instance metadata, read the way SDKs read it: IMDSv2 tokens, then paths."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import botocore.session
import pytest
from botocore.utils import IMDSFetcher, IMDSRegionProvider

from tests.conftest import ZONE, Server, ServerFactory, fast_waiter, new_volume


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def _token(base: str, ttl: str = "60") -> tuple[int, str]:
    request = urllib.request.Request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


class _Fetcher(IMDSFetcher):  # type: ignore[misc]
    """botocore's own IMDS client, reading one path."""

    def read(self, path: str) -> str:
        token = self._fetch_metadata_token()
        return str(self._get_request(path, None, token).text)


def test_botocore_reads_metadata_through_the_environment_endpoint(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url + "/")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    session = botocore.session.Session()
    # botocore's own region lookup for code running on an instance.
    assert IMDSRegionProvider(session=session).provide() == "us-east-1"
    endpoint = session.get_config_variable("ec2_metadata_service_endpoint")
    fetcher = _Fetcher(
        timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": endpoint}
    )
    assert fetcher.read("/latest/meta-data/instance-id") == server.host_instance_id
    assert fetcher.read("/latest/meta-data/placement/availability-zone") == ZONE
    document = json.loads(fetcher.read("/latest/dynamic/instance-identity/document"))
    assert document["instanceId"] == server.host_instance_id
    assert document["region"] == "us-east-1"
    assert document["availabilityZone"] == ZONE
    assert document["accountId"] == "123456789012"


def test_block_device_mapping_lists_attached_volumes(start_server: ServerFactory) -> None:
    server = start_server()
    ec2 = server.client()
    status, listing = _get(f"{server.url}/latest/meta-data/block-device-mapping/")
    assert (status, listing.split()) == (200, ["ami", "root"])
    volume_id = new_volume(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    status, listing = _get(f"{server.url}/latest/meta-data/block-device-mapping/")
    assert listing.split() == ["ami", "root", "ebs1"]
    assert _get(f"{server.url}/latest/meta-data/block-device-mapping/ebs1") == (200, "sdf")


def test_metadata_directories_and_missing_paths(server: Server) -> None:
    status, listing = _get(f"{server.url}/latest/meta-data/")
    assert status == 200
    assert {"instance-id", "placement/", "block-device-mapping/"} <= set(listing.split())
    assert _get(f"{server.url}/latest/meta-data/placement/region") == (200, "us-east-1")
    assert _get(f"{server.url}/latest/meta-data/no-such-thing")[0] == 404
    assert _get(f"{server.url}/latest/meta-data/instance-id/deeper")[0] == 404


def test_tokens(server: Server) -> None:
    status, token = _token(server.url)
    assert status == 200 and len(token) > 20
    assert _get(f"{server.url}/latest/meta-data/instance-id", token) == (
        200,
        server.host_instance_id,
    )
    assert _get(f"{server.url}/latest/meta-data/instance-id", "forged")[0] == 401
    assert _token(server.url, "0")[0] == 400
    assert _token(server.url, "21601")[0] == 400
    assert _token(server.url, "soon")[0] == 400


def test_tokens_required(start_server: ServerFactory) -> None:
    server = start_server("--imds-tokens", "required")
    assert _get(f"{server.url}/latest/meta-data/instance-id")[0] == 401
    token = _token(server.url)[1]
    assert _get(f"{server.url}/latest/meta-data/instance-id", token)[1] == server.host_instance_id


def test_other_instances_have_their_own_metadata(server: Server) -> None:
    ec2 = server.client()
    instance = ec2.run_instances(
        ImageId="ami-00000000000000001",
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": "us-east-1c"},
    )["Instances"][0]["InstanceId"]
    base = f"{server.url}/instances/{instance}"
    assert _get(f"{base}/latest/meta-data/instance-id") == (200, instance)
    assert _get(f"{base}/latest/meta-data/placement/availability-zone") == (200, "us-east-1c")
    assert (
        _get(f"{server.url}/instances/i-0123456789abcdef0/latest/meta-data/instance-id")[0] == 404
    )
