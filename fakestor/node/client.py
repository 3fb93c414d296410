"""The agent's side of the server's node endpoint (`/node/v1/...`), and registering a new
instance for the node through the EC2 API when no instance id is given."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

NODE_IMAGE_ID = "ami-00000000000000001"  # fakestor's instance-store image: no EBS volume


class NodeApiError(Exception):
    """The server refused a call (`status` is its HTTP status) or could not be reached (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def credentials() -> Credentials:
    """The AWS credentials boto3 finds (environment, config files), else placeholders that
    a server which verifies no signatures accepts."""
    found = boto3.Session().get_credentials()
    if found is not None:
        frozen = found.get_frozen_credentials()
        return Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token)
    return Credentials("AKIDFAKESTORNODE", "fakestor-node")


class NodeClient:
    def __init__(self, endpoint: str, instance_id: str, region: str = "us-east-1") -> None:
        self.base = f"{endpoint.rstrip('/')}/node/v1/instances/{instance_id}"
        self.region = region
        self.token = ""

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float = 10,
        signed: bool = False,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            # Registration is signed as an EC2 request, so a server that verifies
            # signatures hands node tokens only to holders of its credentials.
            unsigned = AWSRequest(method=method, url=self.base + path, data=data, headers=headers)
            SigV4Auth(credentials(), "ec2", self.region).add_auth(unsigned)
            headers = dict(unsigned.headers.items())
        else:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base + path, method=method, data=data, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                result: dict[str, Any] = json.load(answer)
                return result
        except urllib.error.HTTPError as failure:
            try:
                message = json.load(failure)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = str(failure)
            raise NodeApiError(failure.code, message) from None
        except (OSError, ValueError) as failure:
            raise NodeApiError(0, f"cannot reach the server: {failure}") from None

    def register(self) -> dict[str, Any]:
        answer = self._call("POST", "/register", {}, signed=True)
        self.token = str(answer["token"])
        return answer

    def attachments(self, wait: float, etag: str) -> dict[str, Any]:
        query = f"/attachments?wait={wait:g}&etag={etag}"
        return self._call("GET", query, timeout=wait + 10)

    def report(self, volume_id: str, present: bool, device: str | None = None) -> str:
        answer = self._call(
            "PUT", f"/attachments/{volume_id}", {"present": present, "device": device}
        )
        return str(answer["state"])


def launch_instance(endpoint: str, region: str) -> str:
    """RunInstances of one instance of fakestor's instance-store image; its id."""
    found = credentials()
    ec2 = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=found.access_key,
        aws_secret_access_key=found.secret_key,
        aws_session_token=found.token,
        config=Config(retries={"max_attempts": 3}),
    )
    launched = ec2.run_instances(
        ImageId=NODE_IMAGE_ID,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "Name", "Value": f"fakestor-node-{socket.gethostname()}"}],
            }
        ],
    )
    return str(launched["Instances"][0]["InstanceId"])
