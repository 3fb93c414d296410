"""The Flask blueprint that answers the Recycle Bin API (`/rules...`, `/list-rules`,
`/tags/...`) for requests whose SigV4 scope names `rbin`; the rest-json wire is the one the
EBS direct APIs use, driven by botocore's `rbin` model."""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from fakestor import errors
from fakestor.control.regions import READ_PREFIXES, Regions
from fakestor.direct_errors import DirectError
from fakestor.ebs import wire
from fakestor.rbin.actions import ACTIONS
from fakestor.rbin_errors import (
    RbinInternalServerException,
    RbinUnknownOperationException,
    RbinValidationException,
)
from fakestor.services import not_implemented, raw_path, region_of, service_of

log = logging.getLogger(__name__)

SERVICE = "rbin"


def _respond(answer: wire.Response, request_id: str) -> Response:
    headers = {**answer.headers, "x-amzn-RequestId": request_id}
    return Response(
        answer.body, status=answer.status, headers=headers, content_type=answer.content_type
    )


def rbin_blueprint(regions: Regions) -> Blueprint:
    blueprint = Blueprint("rbin", __name__)
    methods = ["GET", "POST", "PATCH", "DELETE"]

    @blueprint.route("/rules", methods=methods)
    @blueprint.route("/rules/<path:rest>", methods=methods)
    @blueprint.route("/list-rules", methods=methods)
    @blueprint.route("/tags/<path:rest>", methods=methods)
    def dispatch(rest: str = "") -> Response:
        if service_of(request) != SERVICE:
            return not_implemented(request)
        request_id = str(uuid.uuid4())
        try:
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                raise RbinValidationException("The request body is too large.") from None
            incoming = wire.Request(
                method=request.method,
                path=raw_path(request),
                query=request.args.to_dict(flat=False),
                headers=dict(request.headers),
                body=body,
            )
            operation = wire.match(SERVICE, incoming)
            if operation is None:
                raise RbinUnknownOperationException(request.method, request.path)
            params = wire.parse_request(operation, incoming)
            region = region_of(request)
            try:
                reading = operation.name.startswith(READ_PREFIXES)
                ebs = regions.get(region, reading=reading) if region else regions.home
            except errors.Ec2Error as refused:  # a region AWS does not have
                raise RbinValidationException(refused.message) from None
            result = ACTIONS[operation.name](ebs, params)
            return _respond(wire.serialize_response(operation, result), request_id)
        except DirectError as error:
            return _respond(wire.serialize_error(SERVICE, error), request_id)
        except Exception:
            log.exception("internal error in request %s", request_id)
            failure = RbinInternalServerException(
                "fakestor failed to handle this request; the server log has the details "
                f"under request id {request_id}."
            )
            return _respond(wire.serialize_error(SERVICE, failure), request_id)

    return blueprint
