"""The Flask application: the EC2 API and the EBS direct APIs of every region, the node
agents' endpoint, and the host's instance metadata, on one endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fakestor.control.regions import Regions
from fakestor.ebs.api import ebs_blueprint
from fakestor.ec2.api import ec2_blueprint
from fakestor.imds import IMDS_PREFIXES, imds_blueprint
from fakestor.node_api import NODE_PREFIX, node_blueprint
from fakestor.services import not_implemented
from fakestor.ui import ui_blueprint

MAX_REQUEST_BYTES = 1024 * 1024


def create_app(
    regions: Regions,
    *,
    deny: Sequence[str] = (),
    imds_tokens_required: bool = False,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> Flask:
    app = Flask("fakestor")
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = max_request_bytes
    # Instance metadata and the UI are the host's, so its region's.
    app.register_blueprint(imds_blueprint(regions.home, imds_tokens_required))
    app.register_blueprint(ui_blueprint(regions.home))
    app.register_blueprint(ec2_blueprint(regions, deny))
    app.register_blueprint(ebs_blueprint(regions))
    app.register_blueprint(node_blueprint(regions.home))  # nodes are the host region's

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

    app.register_error_handler(404, unknown_path)
    app.register_error_handler(405, unknown_path)
    return app
