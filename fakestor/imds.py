"""The instance metadata service (IMDSv1 and v2) for the host and every registered instance.

`/latest/...` describes the machine fakestor runs on; `/instances/<id>/latest/...`
describes another registered instance, so a client playing that node can point
AWS_EC2_METADATA_SERVICE_ENDPOINT there.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

from flask import Blueprint, Response, abort, request

from fakestor import errors
from fakestor.control import Ebs, instances
from fakestor.control.resources import Instance

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21_600

IMDS_PREFIXES = ("/latest/", "/instances/")  # where instance metadata is served


class Tokens:
    """IMDSv2 session tokens and their expiry times."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._expiry = {t: e for t, e in self._expiry.items() if e > now}
            self._expiry[token] = now + ttl
        return token

    def valid(self, token: str) -> bool:
        with self._lock:
            return self._expiry.get(token, 0.0) > time.monotonic()


def _text(body: str) -> Response:
    return Response(body, content_type="text/plain")


def imds_blueprint(ebs: Ebs, tokens_required: bool = False) -> Blueprint:
    blueprint = Blueprint("imds", __name__)
    tokens = Tokens()

    def instance(instance_id: str | None) -> Instance:
        wanted = instance_id or ebs.host_instance_id
        try:
            found = instances.describe_instances(ebs, instance_ids=[wanted])
        except errors.Ec2Error:
            abort(404)
        if not found or found[0].state == "terminated":
            abort(404)
        return found[0]

    def identity(item: Instance) -> dict[str, object]:
        return {
            "accountId": ebs.region.account_id,
            "architecture": "x86_64",
            "availabilityZone": item.zone,
            "imageId": item.image_id,
            "instanceId": item.id,
            "instanceType": item.instance_type,
            "pendingTime": item.launch_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "privateIp": "127.0.0.1",
            "region": ebs.region.name,
            "version": "2017-09-30",
        }

    def block_device_mapping(item: Instance) -> dict[str, str]:
        mapping = {"ami": item.root_device_name, "root": item.root_device_name}
        data_volumes = [a for a in item.attachments if a.device != item.root_device_name]
        for index, attachment in enumerate(
            sorted(data_volumes, key=lambda a: a.attach_time), start=1
        ):
            # IMDS names devices without /dev/, as EC2 does: ebs1 -> sdf.
            mapping[f"ebs{index}"] = attachment.device.removeprefix("/dev/")
        for device, virtual_name in item.ephemeral:
            mapping[virtual_name] = device.removeprefix("/dev/")
        return mapping

    def metadata(item: Instance) -> dict[str, str | dict[str, str]]:
        return {
            "ami-id": item.image_id,
            "hostname": f"ip-127-0-0-1.{ebs.region.name}.compute.internal",
            "instance-id": item.id,
            "instance-type": item.instance_type,
            "local-ipv4": "127.0.0.1",
            "placement": {
                "availability-zone": item.zone,
                "availability-zone-id": ebs.region.zone_id(item.zone),
                "region": ebs.region.name,
            },
            "block-device-mapping": block_device_mapping(item),
        }

    @blueprint.route("/latest/api/token", methods=["PUT"])
    @blueprint.route("/instances/<instance_id>/latest/api/token", methods=["PUT"])
    def token(instance_id: str | None = None) -> Response:
        ttl_text = request.headers.get(TTL_HEADER)
        if ttl_text is None:
            return Response("Missing " + TTL_HEADER, status=400)
        try:
            ttl = int(ttl_text)
        except ValueError:
            return Response(f"{TTL_HEADER} must be an integer", status=400)
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return Response(f"{TTL_HEADER} must be 1 to {MAX_TOKEN_TTL}", status=400)
        return Response(
            tokens.issue(ttl), content_type="text/plain", headers={TTL_HEADER: str(ttl)}
        )

    def check_token() -> None:
        token_value = request.headers.get(TOKEN_HEADER)
        if token_value is None:
            if tokens_required:
                abort(401)
            return
        if not tokens.valid(token_value):
            abort(401)

    @blueprint.route("/latest/meta-data/", defaults={"path": ""})
    @blueprint.route("/latest/meta-data/<path:path>")
    @blueprint.route("/instances/<instance_id>/latest/meta-data/", defaults={"path": ""})
    @blueprint.route("/instances/<instance_id>/latest/meta-data/<path:path>")
    def meta_data(path: str, instance_id: str | None = None) -> Response:
        check_token()
        node: str | dict[str, str] | dict[str, str | dict[str, str]] = metadata(
            instance(instance_id)
        )
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, dict) or part not in node:
                abort(404)
            node = node[part]
        if isinstance(node, dict):
            # A directory lists its entries, sub-directories with a trailing slash.
            return _text(
                "\n".join(
                    key + ("/" if isinstance(value, dict) else "") for key, value in node.items()
                )
            )
        return _text(node)

    @blueprint.route("/latest/dynamic/instance-identity/document")
    @blueprint.route("/instances/<instance_id>/latest/dynamic/instance-identity/document")
    def identity_document(instance_id: str | None = None) -> Response:
        check_token()
        return Response(
            json.dumps(identity(instance(instance_id)), indent=2),
            content_type="text/plain",
        )

    return blueprint
