"""The Flask application: the EC2 API, KMS, the EBS direct APIs, the Recycle Bin API and
CloudWatch's AWS/EBS metrics of every region, and the host's instance metadata, on one
endpoint."""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fakestor.cloudwatch.api import cloudwatch_blueprint, cloudwatch_json_handler
from fakestor.control.regions import Regions
from fakestor.ebs.api import ebs_blueprint
from fakestor.ec2.api import ec2_handler
from fakestor.front import front_blueprint
from fakestor.imds import IMDS_PREFIXES, imds_blueprint
from fakestor.kms.api import kms_handler
from fakestor.rbin.api import rbin_blueprint
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
    # `/` serves every service whose requests post there, by the service of their signature.
    app.register_blueprint(
        front_blueprint(
            {
                "ec2": ec2_handler(regions, deny),
                "kms": kms_handler(regions),
                "monitoring": cloudwatch_json_handler(regions),
            }
        )
    )
    app.register_blueprint(ebs_blueprint(regions))
    app.register_blueprint(cloudwatch_blueprint(regions))
    app.register_blueprint(rbin_blueprint(regions))

    def unknown_path(failure: HTTPException) -> Response | HTTPException:
        # Instance metadata answers like EC2's (plain 404s); API paths in their protocol.
        if request.path.startswith(IMDS_PREFIXES):
            return failure
        return not_implemented(request)

    app.register_error_handler(404, unknown_path)
    app.register_error_handler(405, unknown_path)
    return app
