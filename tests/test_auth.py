"""SigV4 verification (`fakestor server --credentials FILE`): boto3, the aws CLI and raw HTTP
with right, wrong, unknown, stale and missing signatures, for EC2 and the EBS direct APIs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import REGION, Server, ServerFactory
from tests.test_api_ebs_direct import put
from tests.test_cli import _aws_command

KEYS = {"AKIDFAKESTOR": "fakestor-secret", "AKIDSECONDPAIR": "second-secret-key"}


def _client(server: Server, key: str, secret: str, service: str = "ec2") -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def _error(call: Any, **params: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as excinfo:
        call(**params)
    response = excinfo.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


@pytest.fixture
def verifying(start_server: ServerFactory, tmp_path: Path) -> Server:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "# fakestor's key pairs\n" + "".join(f"{k} {s}\n" for k, s in KEYS.items())
    )
    return start_server("--credentials", str(credentials))


def test_right_keys_pass_and_wrong_ones_are_refused(verifying: Server) -> None:
    for key, secret in KEYS.items():
        ec2 = _client(verifying, key, secret)
        volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
        assert volume_id in [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    wrong_secret = _client(verifying, "AKIDFAKESTOR", "not-the-secret")
    assert _error(wrong_secret.describe_volumes) == ("SignatureDoesNotMatch", 403)
    other_pairs_secret = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDSECONDPAIR"])
    assert _error(other_pairs_secret.describe_volumes) == ("SignatureDoesNotMatch", 403)
    unknown = _client(verifying, "AKIDNOBODYKNOWS", "fakestor-secret")
    assert _error(unknown.describe_volumes) == ("AuthFailure", 401)
    # A request with a parameter list and a body is verified as signed, not only simple ones.
    ec2 = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDFAKESTOR"])
    found = ec2.describe_volumes(
        Filters=[{"Name": "size", "Values": ["1"]}, {"Name": "tag:a b/c", "Values": ["x=y&z"]}]
    )
    assert found["Volumes"] == []


def test_stale_and_future_signatures_are_refused(
    verifying: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2 = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDFAKESTOR"])
    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        # botocore's own signer, signing with a clock that is 6 minutes off.
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda s=skew: _now() + s)
        assert _error(ec2.describe_volumes) == ("RequestExpired", 400)
    four_minutes_slow = _now() - timedelta(minutes=4)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: four_minutes_slow)
    assert ec2.describe_volumes()["Volumes"] == []  # within five minutes


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def test_unsigned_requests_are_refused_but_instance_metadata_is_served(verifying: Server) -> None:
    body = urllib.parse.urlencode({"Action": "DescribeVolumes", "Version": "2016-11-15"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(verifying.url, data=body.encode()))
    assert refused.value.code == 401
    assert b"<Code>AuthFailure</Code>" in refused.value.read()
    metadata = f"{verifying.url}/latest/meta-data/instance-id"
    with urllib.request.urlopen(metadata) as answer:
        assert answer.read().decode() == verifying.host_instance_id
    with urllib.request.urlopen(f"{verifying.url}/ui/state.json") as answer:
        assert answer.status == 200  # the UI, to a browser on this machine
    with pytest.raises(urllib.error.HTTPError) as unsigned_direct:
        urllib.request.urlopen(f"{verifying.url}/snapshots/snap-0123456789abcdef0/blocks")
    assert unsigned_direct.value.code == 403
    assert unsigned_direct.value.headers["x-amzn-ErrorType"] == (
        "MissingAuthenticationTokenException"
    )


def test_presigned_urls_are_verified(verifying: Server) -> None:
    ec2 = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDFAKESTOR"])
    # botocore presigns an EC2 action with its method, POST, and an empty body.
    url = ec2.generate_presigned_url("describe_availability_zones", ExpiresIn=60)
    with urllib.request.urlopen(urllib.request.Request(url, data=b"")) as answer:
        assert b"us-east-1a" in answer.read()
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")[:-1]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(tampered, data=b""))
    assert refused.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in refused.value.read()


def test_an_expired_presigned_url_is_refused(
    verifying: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ec2 = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDFAKESTOR"])
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: _now() - timedelta(hours=1))
    url = ec2.generate_presigned_url("describe_availability_zones", ExpiresIn=1800)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=b""))
    assert refused.value.code == 400
    assert b"<Code>RequestExpired</Code>" in refused.value.read()


def test_ebs_direct_requests_are_verified(verifying: Server) -> None:
    right = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDFAKESTOR"], service="ebs")
    missing = "snap-0123456789abcdef0"
    assert _error(right.list_snapshot_blocks, SnapshotId=missing)[0] == "ResourceNotFoundException"
    wrong = _client(verifying, "AKIDFAKESTOR", "not-the-secret", service="ebs")
    assert _error(wrong.list_snapshot_blocks, SnapshotId=missing) == (
        "InvalidSignatureException",
        403,
    )
    # A block's body is not in the signature (UNSIGNED-PAYLOAD), its checksum is checked.
    started = right.start_snapshot(VolumeSize=1)["SnapshotId"]
    block = os.urandom(512 * 1024)
    put(right, started, 3, block)
    assert right.complete_snapshot(SnapshotId=started, ChangedBlocksCount=1)["Status"]
    unknown = _client(verifying, "AKIDNOBODYKNOWS", "x", service="ebs")
    assert _error(unknown.list_snapshot_blocks, SnapshotId=missing) == (
        "UnrecognizedClientException",
        403,
    )


def _aws(server: Server, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDSECONDPAIR",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    command = [*_aws_command(), "--endpoint-url", server.url, "--output", "json", "ec2", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_the_aws_cli_with_credentials_in_its_environment(verifying: Server) -> None:
    assert _aws(verifying, KEYS["AKIDSECONDPAIR"], "describe-volumes").returncode == 0
    refused = _aws(verifying, "wrong", "describe-volumes")
    assert refused.returncode != 0 and "SignatureDoesNotMatch" in refused.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_off_loopback_needs_credentials_or_the_insecure_flag(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    everywhere = f"0.0.0.0:{_free_port()}"
    command = [sys.executable, "-m", "fakestor", "server", "--backend", "metadata",
               "--data-dir", str(tmp_path / "data"), "--listen", everywhere]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert len(refused.stderr.splitlines()) == 1
    assert "reachable beyond loopback" in refused.stderr and "--credentials" in refused.stderr
    assert not (tmp_path / "data").exists()
    # FAKESTOR_CREDENTIALS names the file as --credentials does.
    credentials = tmp_path / "credentials"
    credentials.write_text("AKIDFAKESTOR fakestor-secret\n")
    server = start_server("--listen", everywhere, env={"FAKESTOR_CREDENTIALS": str(credentials)})
    assert "must be signed" in server.log()
    assert _error(_client(server, "AKIDFAKESTOR", "wrong").describe_volumes)[0] == (
        "SignatureDoesNotMatch"
    )
    server.stop()
    insecure = start_server("--listen", f"0.0.0.0:{_free_port()}", "--insecure-no-auth")
    assert _client(insecure, "ANYKEY", "any").describe_volumes()["Volumes"] == []


def test_other_services_refuse_in_their_own_protocol(verifying: Server) -> None:
    # CloudWatch (CBOR, as boto3 speaks it) and KMS (JSON): served past the check.
    for service, call in (("cloudwatch", "list_metrics"), ("kms", "list_keys")):
        right = _client(verifying, "AKIDFAKESTOR", KEYS["AKIDFAKESTOR"], service=service)
        getattr(right, call)()
    cloudwatch = _client(verifying, "AKIDFAKESTOR", "wrong", service="cloudwatch")
    assert _error(cloudwatch.list_metrics) == ("SignatureDoesNotMatch", 403)
    stranger = _client(verifying, "AKIDNOBODYKNOWS", "x", service="cloudwatch")
    assert _error(stranger.list_metrics) == ("InvalidClientTokenId", 403)
    kms = _client(verifying, "AKIDFAKESTOR", "wrong", service="kms")
    assert _error(kms.list_keys) == ("InvalidSignatureException", 403)
    # CloudWatch's Query protocol (not served), signed by botocore's signer with a wrong
    # secret and an unknown key, is refused in Query XML.
    for key, secret, code in (
        ("AKIDFAKESTOR", "wrong", "SignatureDoesNotMatch"),
        ("AKIDNOBODYKNOWS", "x", "InvalidClientTokenId"),
    ):
        query = AWSRequest(
            method="POST",
            url=verifying.url + "/",
            data=b"Action=ListMetrics&Version=2010-08-01",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        SigV4Auth(Credentials(key, secret), "monitoring", REGION).add_auth(query)
        prepared = query.prepare()
        sent = urllib.request.Request(
            prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(sent)
        assert refused.value.code == 403
        assert f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>".encode() in (
            refused.value.read()
        )
