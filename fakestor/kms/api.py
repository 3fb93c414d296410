"""The KMS endpoint (`POST /` with `X-Amz-Target: TrentService.<Operation>`), a handler the
front dispatcher (fakestor/front.py) calls for requests signed for `kms`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from fakestor import errors, kms_errors
from fakestor.control.regions import READ_PREFIXES, Regions
from fakestor.kms import wire
from fakestor.kms.actions import ACTIONS
from fakestor.services import region_of

log = logging.getLogger(__name__)

SERVICE = "kms"


def kms_handler(regions: Regions) -> Callable[[], Response]:
    """KMS of every region: a request acts in the region of its signature."""

    def respond(body: bytes, status: int, request_id: str) -> Response:
        return Response(
            body,
            status=status,
            content_type=wire.content_type(SERVICE),
            headers={"x-amzn-RequestId": request_id},
        )

    def dispatch() -> Response:
        request_id = str(uuid.uuid4())
        try:
            if request.method != "POST":
                raise kms_errors.UnknownOperationException("KMS takes POST requests only.")
            try:
                body = request.get_data(cache=False)
            except RequestEntityTooLarge:
                raise kms_errors.ValidationException("The request body is too large.") from None
            operation = wire.operation_model(SERVICE, request.headers.get("X-Amz-Target"))
            handler = ACTIONS.get(operation.name)
            if handler is None:
                raise kms_errors.UnsupportedOperationException(
                    f"fakestor's KMS does not implement {operation.name}."
                )
            params = wire.parse_request(operation, body)
            region = region_of(request)
            try:
                reading = operation.name.startswith(READ_PREFIXES)
                ebs = regions.get(region, reading=reading) if region else regions.home
            except errors.Ec2Error as refused:  # a region AWS does not have
                raise kms_errors.UnrecognizedClientException(refused.message) from None
            result = handler(ebs, params)
            return respond(wire.serialize_response(operation, result), 200, request_id)
        except kms_errors.KmsError as error:
            return respond(wire.serialize_error(error), error.http_status, request_id)
        except Exception:
            log.exception("internal error in request %s", request_id)
            failure = kms_errors.KMSInternalException(
                "fakestor failed to handle this request; the server log has the details "
                f"under request id {request_id}."
            )
            return respond(wire.serialize_error(failure), failure.http_status, request_id)

    return dispatch
