"""CloudWatch for the request's region (SigV4 service `monitoring`): Smithy RPC v2 CBOR on
`POST /service/.../operation/<Op>` (a blueprint), and the JSON protocol on `POST /` with
`X-Amz-Target` (`cloudwatch_json_handler`, for the front dispatcher of `/`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from flask import Blueprint, Request, Response, request

from fakestor import errors
from fakestor.cloudwatch import wire
from fakestor.cloudwatch.actions import ACTIONS
from fakestor.control.regions import READ_PREFIXES, Regions
from fakestor.services import not_implemented, region_of, service_of

log = logging.getLogger(__name__)

SIGNING_NAME = "monitoring"


def _answer(regions: Regions, incoming: Request, name: str, codec: str) -> Response:
    request_id = str(uuid.uuid4())
    try:
        reply = _reply(regions, incoming, name, codec)
    except wire.CloudWatchError as failure:
        reply = wire.serialize_error(failure, codec)
    except errors.Ec2Error as failure:  # a region EC2 does not have
        reply = wire.serialize_error(wire.InvalidParameterValue(failure.message), codec)
    except Exception:
        log.exception("internal error in CloudWatch request %s", request_id)
        reply = wire.serialize_error(
            wire.InternalServiceError(
                "fakestor failed to handle this request; the server log has the details under "
                f"request id {request_id}."
            ),
            codec,
        )
    headers = {**reply.headers, "x-amzn-RequestId": request_id}
    return Response(reply.body, status=reply.status, headers=headers)


def _reply(regions: Regions, incoming: Request, name: str, codec: str) -> wire.Response:
    operation = wire.operation_model(name)
    if operation is None:
        return wire.unknown_operation(name, codec)
    handler = ACTIONS.get(name)
    if handler is None:
        return wire.not_served(name, codec)
    region = region_of(incoming)
    # ListMetrics, GetMetricStatistics, GetMetricData: reads, which create no region's store.
    ebs = regions.get(region, reading=name.startswith(READ_PREFIXES)) if region else regions.home
    parsed = wire.parse_request(operation, incoming.get_data(cache=False), codec)
    return wire.serialize_response(operation, handler(ebs, parsed), codec)


def answer_json(regions: Regions, incoming: Request) -> Response:
    """A JSON-protocol CloudWatch request (`X-Amz-Target: GraniteServiceVersion20100801.Op`)."""
    target = incoming.headers.get("X-Amz-Target", "")
    if not target:  # CloudWatch's Query protocol (Action=...): older SDKs; not served
        return not_implemented(incoming)
    prefix, _, name = target.partition(".")
    if prefix != wire.service_model().metadata["targetPrefix"]:
        name = target or "(no X-Amz-Target)"
    return _answer(regions, incoming, name, wire.JSON)


def cloudwatch_json_handler(regions: Regions) -> Callable[[], Response]:
    """The front dispatcher's handler of `/` for requests signed for `monitoring`."""
    return lambda: answer_json(regions, request)


def cloudwatch_blueprint(regions: Regions) -> Blueprint:
    blueprint = Blueprint("cloudwatch", __name__)

    @blueprint.route("/service/<service>/operation/<name>", methods=["POST"])
    def dispatch(service: str, name: str) -> Response:
        if service_of(request) != SIGNING_NAME:
            return not_implemented(request)
        if service != wire.service_model().metadata["targetPrefix"]:
            name = f"{service}.{name}"
        return _answer(regions, request, name, wire.CBOR)

    return blueprint
