"""The plugin's instance metadata (IMDSv2) client: which instance and zone it runs in."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

DEFAULT_ENDPOINT = "http://169.254.169.254/"
TOKEN_TTL = "300"


class ImdsError(Exception):
    """Instance metadata could not be read; the message says from where and why."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    zone: str
    region: str


def endpoint_from_environment() -> str:
    """The endpoint SDKs use: AWS_EC2_METADATA_SERVICE_ENDPOINT, else the link-local one."""
    return os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or DEFAULT_ENDPOINT


def read_identity(endpoint: str, timeout: float = 5.0) -> Identity:
    base = endpoint.rstrip("/")
    try:
        token_request = urllib.request.Request(
            f"{base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL},
        )
        with urllib.request.urlopen(token_request, timeout=timeout) as reply:
            token = reply.read().decode()
        document_request = urllib.request.Request(
            f"{base}/latest/dynamic/instance-identity/document",
            headers={"X-aws-ec2-metadata-token": token},
        )
        with urllib.request.urlopen(document_request, timeout=timeout) as reply:
            document = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError) as failure:
        raise ImdsError(
            f"cannot read instance metadata from {base}: {failure}; is the fakestor server "
            "running, and AWS_EC2_METADATA_SERVICE_ENDPOINT pointing at it?"
        ) from None
    return Identity(document["instanceId"], document["availabilityZone"], document["region"])
