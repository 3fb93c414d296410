"""The Flask blueprint that answers the EBS direct APIs (`/snapshots...`) for requests whose
SigV4 scope names `ebs`; other services' requests on these paths get their own 501."""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from fakestor import errors
from fakestor.control import server_faults
from fakestor.control.regions import READ_PREFIXES, Regions
from fakestor.direct_errors import (
    AccessDeniedException,
    DirectError,
    InternalServerException,
    RequestThrottledException,
    UnknownOperationException,
    ValidationException,
)
from fakestor.ebs import wire
from fakestor.ebs.actions import ACTIONS
from fakestor.services import not_implemented, region_of, service_of
from fakestor.throttling import Throttle

log = logging.getLogger(__name__)

SERVICE = "ebs"


def _respond(answer: wire.Response, request_id: str) -> Response:
    headers = {**answer.headers, "x-amzn-RequestId": request_id}
    return Response(
        answer.body, status=answer.status, headers=headers, content_type=answer.content_type
    )


def ebs_blueprint(regions: Regions, throttle: Throttle | None = None) -> Blueprint:
    blueprint = Blueprint("ebs", __name__)

    @blueprint.route("/snapshots", methods=["GET", "POST", "PUT"])
    @blueprint.route("/snapshots/<path:rest>", methods=["GET", "POST", "PUT"])
    def dispatch(rest: str = "") -> Response:
        if service_of(request) != SERVICE:
            return not_implemented(request)
        request_id = str(uuid.uuid4())
        try:
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                raise ValidationException("The request body is too large.") from None
            incoming = wire.Request(
                method=request.method,
                path=request.path,
                query=request.args.to_dict(flat=False),
                headers=dict(request.headers),
                body=body,
            )
            operation = wire.match(SERVICE, incoming)
            if operation is None:
                raise UnknownOperationException(request.method, request.path)
            params = wire.parse_request(operation, incoming)
            region = region_of(request)
            try:
                reading = operation.name.startswith(READ_PREFIXES)
                ebs = regions.get(region, reading=reading) if region else regions.home
            except errors.Ec2Error as refused:  # a region AWS does not have
                raise AccessDeniedException(refused.message) from None
            try:
                server_faults.maybe_fail(ebs, operation.name)
            except errors.Ec2Error as injected:  # the EBS direct APIs' 5xx is this one
                raise InternalServerException(injected.message) from None
            name = operation.name
            if throttle is not None and not throttle.admit(SERVICE, name, ebs.region.name):
                raise RequestThrottledException(name)
            result = ACTIONS[operation.name](ebs, params)
            return _respond(wire.serialize_response(operation, result), request_id)
        except DirectError as error:
            return _respond(wire.serialize_error(SERVICE, error), request_id)
        except Exception:
            log.exception("internal error in request %s", request_id)
            failure = InternalServerException(
                "fakestor failed to handle this request; the server log has the details "
                f"under request id {request_id}."
            )
            return _respond(wire.serialize_error(SERVICE, failure), request_id)

    return blueprint
