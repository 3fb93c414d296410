"""The Flask application: the EC2 API, KMS, the EBS direct APIs, the Recycle Bin API and
CloudWatch's AWS/EBS metrics of every region, the node agents' endpoint, and the host's
instance metadata, on one endpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fakestor.auth import Refusal, body_too_large, is_loopback, refusal_response, verify
from fakestor.cloudwatch.api import cloudwatch_blueprint, cloudwatch_json_handler
from fakestor.control.regions import Regions
from fakestor.ebs.api import ebs_blueprint
from fakestor.ec2.api import ec2_handler
from fakestor.faults_api import faults_blueprint
from fakestor.front import front_blueprint
from fakestor.imds import IMDS_PREFIXES, imds_blueprint
from fakestor.kms.api import kms_handler
from fakestor.node_api import NODE_PREFIX, node_blueprint
from fakestor.rbin.api import rbin_blueprint
from fakestor.services import not_implemented, service_of
from fakestor.throttling import Throttle
from fakestor.ui import UI_PREFIX, ui_blueprint

MAX_REQUEST_BYTES = 1024 * 1024


def create_app(
    regions: Regions,
    *,
    deny: Sequence[str] = (),
    imds_tokens_required: bool = False,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    credentials: Mapping[str, str] | None = None,
    throttle: Throttle | None = None,
) -> Flask:
    """The app; with `credentials` (access key id -> secret) every API request must carry a
    valid SigV4 signature by one of them."""
    app = Flask("fakestor")
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = max_request_bytes
    # Instance metadata and the UI are the host's, so its region's.
    app.register_blueprint(imds_blueprint(regions.home, imds_tokens_required))
    app.register_blueprint(ui_blueprint(regions.home))
    app.register_blueprint(node_blueprint(regions.home))  # nodes are the host region's
    app.register_blueprint(faults_blueprint(regions.home))
    # One set of token buckets (off unless rates are configured) for EC2 and EBS direct.
    # `/` serves every service whose requests post there, by the service of their signature.
    app.register_blueprint(
        front_blueprint(
            {
                "ec2": ec2_handler(regions, deny, throttle),
                "kms": kms_handler(regions),
                "monitoring": cloudwatch_json_handler(regions),
            }
        )
    )
    app.register_blueprint(ebs_blueprint(regions, throttle))
    app.register_blueprint(cloudwatch_blueprint(regions))
    app.register_blueprint(rbin_blueprint(regions, throttle))

    def unknown_path(failure: HTTPException) -> Response | HTTPException:
        # Instance metadata answers like EC2's (plain 404s); API paths in their protocol.
        if request.path.startswith(IMDS_PREFIXES):
            return failure
        if request.path.startswith(NODE_PREFIX):
            return Response(
                '{"error": {"code": "NotFound", "message": "no such node API path"}}',
                status=failure.code or 404,
                content_type="application/json",
            )
        return not_implemented(request)

    if credentials:
        _verify_signatures(app, credentials)
    app.register_error_handler(404, unknown_path)
    app.register_error_handler(405, unknown_path)
    return app


def _verify_signatures(app: Flask, credentials: Mapping[str, str]) -> None:
    @app.before_request
    def check_signature() -> Response | None:
        # Instance metadata is never signed; the UI (a browser's) only from this machine.
        if request.path.startswith(IMDS_PREFIXES):
            return None
        if request.path.startswith(UI_PREFIX) and is_loopback(request.remote_addr or ""):
            return None
        if request.path.startswith(NODE_PREFIX) and not request.path.endswith("/register"):
            return None  # a node's calls carry the token its signed registration received
        if body_too_large(request):
            return None  # refused by the API's own handler, unread
        service = service_of(request)
        if service is None and request.path.startswith("/snapshots"):
            service = "ebs"  # an unsigned EBS direct request: answer in its protocol
        try:
            verify(request, credentials, datetime.now(UTC))
        except Refusal as refusal:
            return refusal_response(request, refusal, service)
        return None
