"""Serving a rest-json service (the EBS direct APIs, the Recycle Bin) from its botocore model:
one dispatcher per service, for the blueprint that routes the service's paths to it.

A request is matched to an operation by method and URI template (fakestor/ebs/wire.py),
acts in the region of its signature, may be failed by an injected error rate
(`fakestor fault`) or throttled (`--request-rate`), and is answered with the service's
own error shapes; an unexpected failure is the service's internal error, never a trace.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from fakestor import errors
from fakestor.control import server_faults
from fakestor.control.context import Ebs
from fakestor.control.regions import READ_PREFIXES, Regions
from fakestor.direct_errors import DirectError
from fakestor.ebs import wire
from fakestor.services import not_implemented, raw_path, region_of, service_of
from fakestor.throttling import Throttle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestJsonService:
    """A rest-json service: its model's name, its actions, and its error shapes."""

    name: str
    actions: Mapping[str, Callable[[Ebs, dict[str, Any]], Any]]
    invalid: Callable[[str], DirectError]  # a request that cannot be read
    unknown_operation: Callable[[str, str], DirectError]  # method, path
    no_such_region: Callable[[str], DirectError]
    internal: Callable[[str], DirectError]
    throttled: Callable[[str], DirectError]  # the action's name


def _respond(answer: wire.Response, request_id: str) -> Response:
    headers = {**answer.headers, "x-amzn-RequestId": request_id}
    return Response(
        answer.body, status=answer.status, headers=headers, content_type=answer.content_type
    )


def dispatcher(
    service: RestJsonService, regions: Regions, throttle: Throttle | None = None
) -> Callable[..., Response]:
    """The view function that answers every path of `service`; other services get a 501."""

    def dispatch(**_: str) -> Response:
        if service_of(request) != service.name:
            return not_implemented(request)
        request_id = str(uuid.uuid4())
        try:
            result = _act(service, regions, throttle)
            return _respond(result, request_id)
        except DirectError as error:
            return _respond(wire.serialize_error(service.name, error), request_id)
        except Exception:
            log.exception("internal error in request %s", request_id)
            failure = service.internal(
                "fakestor failed to handle this request; the server log has the details "
                f"under request id {request_id}."
            )
            return _respond(wire.serialize_error(service.name, failure), request_id)

    return dispatch


def _act(service: RestJsonService, regions: Regions, throttle: Throttle | None) -> wire.Response:
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise service.invalid("The request body is too large.") from None
    incoming = wire.Request(
        method=request.method,
        path=raw_path(request),
        query=request.args.to_dict(flat=False),
        headers=dict(request.headers),
        body=body,
    )
    operation = wire.match(service.name, incoming)
    if operation is None:
        raise service.unknown_operation(request.method, request.path)
    params = wire.parse_request(operation, incoming)
    region = region_of(request)
    try:
        reading = operation.name.startswith(READ_PREFIXES)
        ebs = regions.get(region, reading=reading) if region else regions.home
    except errors.Ec2Error as refused:  # a region AWS does not have
        raise service.no_such_region(refused.message) from None
    try:
        server_faults.maybe_fail(ebs, operation.name)
    except errors.Ec2Error as injected:  # a rest-json service's 5xx is its internal error
        raise service.internal(injected.message) from None
    if throttle is not None and not throttle.admit(service.name, operation.name, ebs.region.name):
        raise service.throttled(operation.name)
    result = service.actions[operation.name](ebs, params)
    return wire.serialize_response(operation, result)
