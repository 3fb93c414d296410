"""The node agents' endpoint, off the EC2 API path: `/node/v1/instances/<id>/...`, JSON,
each call but registration authenticated by the instance's node token (Bearer)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from fakestor import errors
from fakestor.control import nodes
from fakestor.control.context import Ebs

NODE_PREFIX = "/node/"
LONGEST_WAIT = 25.0  # seconds a poll may wait for a change
POLL_INTERVAL = 0.2


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message}}, status)


def _etag(view: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:32]


def node_blueprint(ebs: Ebs) -> Blueprint:
    """Nodes are instances of `ebs`'s region (the server's --region)."""
    blueprint = Blueprint("node", __name__)

    def token_refused(instance_id: str) -> Response | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not token or not nodes.authenticated(ebs, instance_id, token):
            return _error(401, "AuthFailure", f"no valid node token for {instance_id}")
        return None

    @blueprint.errorhandler(errors.Ec2Error)
    def ec2_error(failure: errors.Ec2Error) -> Response:
        status = 404 if failure.code.endswith("NotFound") else 400
        return _error(status, failure.code, failure.message)

    @blueprint.route("/node/v1/instances/<instance_id>/register", methods=["POST"])
    def register(instance_id: str) -> Response:
        # The address the agent reached us at: its exports listen there.
        address = urlsplit(f"//{request.host}").hostname or "127.0.0.1"
        token = nodes.register_node(ebs, instance_id, address)
        return _json({"instance_id": instance_id, "token": token, "region": ebs.region.name})

    @blueprint.route("/node/v1/instances/<instance_id>/attachments", methods=["GET"])
    def attachments(instance_id: str) -> Response:
        refused = token_refused(instance_id)
        if refused is not None:
            return refused
        try:
            wait = min(float(request.args.get("wait", "0")), LONGEST_WAIT)
        except ValueError:
            return _error(400, "InvalidParameterValue", "wait must be a number of seconds")
        known = request.args.get("etag", "")
        deadline = time.monotonic() + wait
        while True:
            view = nodes.node_view(ebs, instance_id)
            tag = _etag(view)
            if tag != known or time.monotonic() >= deadline:
                return _json({**view, "etag": tag})
            time.sleep(POLL_INTERVAL)

    @blueprint.route("/node/v1/instances/<instance_id>/attachments/<volume_id>", methods=["PUT"])
    def report(instance_id: str, volume_id: str) -> Response:
        refused = token_refused(instance_id)
        if refused is not None:
            return refused
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("present"), bool):
            return _error(400, "InvalidParameterValue", 'the body is {"present": bool, ...}')
        device = body.get("device") if isinstance(body.get("device"), str) else None
        state = nodes.report_device(ebs, instance_id, volume_id, body["present"], device)
        return _json({"volume_id": volume_id, "state": state})

    return blueprint
