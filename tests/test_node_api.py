"""The node agents' endpoint (/node/v1/...) as a client other than the agent sees it:
registration, the per-instance token, and errors as JSON (metadata backend, no root)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.conftest import ServerFactory, wait_for

NODE_IMAGE = "ami-00000000000000001"


def _call(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, token: str = ""
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as failure:
        return failure.code, json.load(failure)


def test_registration_tokens_and_errors(start_server: ServerFactory) -> None:
    server = start_server()
    ec2 = server.client()
    instance_id = ec2.run_instances(ImageId=NODE_IMAGE, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    base = f"{server.url}/node/v1/instances"

    status, answer = _call(f"{base}/{instance_id}/register", "POST", {})
    assert status == 200 and answer["instance_id"] == instance_id
    token = answer["token"]
    for wrong in ("", "not-the-token"):
        status, answer = _call(f"{base}/{instance_id}/attachments", token=wrong)
        assert (status, answer["error"]["code"]) == (401, "AuthFailure")

    status, answer = _call(f"{base}/{instance_id}/attachments", token=token)
    assert status == 200
    assert answer["instance_id"] == instance_id and answer["attachments"] == []
    # A long poll returns at once when the caller's view is out of date ...
    volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    wait_for(lambda: ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"]
             == "available")  # fmt: skip
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    status, changed = _call(
        f"{base}/{instance_id}/attachments?wait=20&etag={answer['etag']}", token=token
    )
    (attachment,) = changed["attachments"]
    # ... and on the metadata backend an attachment is a record, with no export to serve.
    assert attachment["volume_id"] == volume_id and attachment["export"] is None

    # A new registration replaces the token.
    _, again = _call(f"{base}/{instance_id}/register", "POST", {})
    assert _call(f"{base}/{instance_id}/attachments", token=token)[0] == 401
    assert _call(f"{base}/{instance_id}/attachments", token=again["token"])[0] == 200

    status, answer = _call(
        f"{base}/{instance_id}/attachments/{volume_id}", "PUT", {"present": "yes"}, again["token"]
    )
    assert (status, answer["error"]["code"]) == (400, "InvalidParameterValue")
    status, answer = _call(f"{base}/{server.host_instance_id}/register", "POST", {})
    assert (status, answer["error"]["code"]) == (400, "OperationNotPermitted")
    status, answer = _call(f"{base}/i-0123456789abcdef0/register", "POST", {})
    assert (status, answer["error"]["code"]) == (404, "InvalidInstanceID.NotFound")
    status, answer = _call(f"{server.url}/node/v1/nothing")
    assert status == 404 and answer["error"]["code"] == "NotFound"
