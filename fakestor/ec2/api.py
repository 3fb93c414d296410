"""The EC2 Query endpoint (`POST /` with `Action=...`), a handler that the front dispatcher
(fakestor/front.py) calls for requests signed for `ec2` and for unsigned ones."""

from __future__ import annotations

import fnmatch
import logging
import sqlite3
import uuid
from collections.abc import Callable, Sequence

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from fakestor import errors
from fakestor.control import server_faults
from fakestor.control.regions import READ_PREFIXES, Regions
from fakestor.ec2 import wire
from fakestor.ec2.actions import ACTIONS
from fakestor.services import region_of
from fakestor.throttling import Throttle

log = logging.getLogger(__name__)

XML = "text/xml;charset=UTF-8"


def _error_response(error: errors.Ec2Error, request_id: str) -> Response:
    return Response(
        wire.serialize_error(error.code, error.message, request_id),
        status=error.http_status,
        content_type=XML,
        headers={"x-amzn-RequestId": request_id},
    )


def _out_of_space(failure: sqlite3.OperationalError) -> bool:
    return "disk is full" in str(failure) or "disk I/O error" in str(failure)


def ec2_handler(
    regions: Regions, deny: Sequence[str] = (), throttle: Throttle | None = None
) -> Callable[[], Response]:
    """The EC2 endpoint of every region: a request acts in the region of its signature
    (unsigned: the server's). Actions matching a `deny` glob answer UnauthorizedOperation;
    actions above their `throttle` rate, RequestLimitExceeded."""

    def dispatch() -> Response:
        request_id = str(uuid.uuid4())
        try:
            try:
                params = {**request.args.to_dict(), **request.form.to_dict()}
            except RequestEntityTooLarge:
                raise errors.RequestEntityTooLarge(
                    int(current_app.config["MAX_CONTENT_LENGTH"])
                ) from None
            action = params.get("Action")
            if not action:
                raise errors.MissingAction()
            operation = wire.operation_model(action)
            handler = ACTIONS.get(action)
            if handler is None:
                raise errors.InvalidAction(action)
            if any(fnmatch.fnmatchcase(action, pattern) for pattern in deny):
                raise errors.UnauthorizedOperation()
            region = region_of(request)
            reading = action.startswith(READ_PREFIXES)
            ebs = regions.get(region, reading=reading) if region else regions.home
            if throttle is not None and not throttle.admit("ec2", action, ebs.region.name):
                raise errors.RequestLimitExceeded()
            server_faults.maybe_fail(ebs, action)
            result = handler(ebs, wire.parse_request(operation, params))
            body = wire.serialize_response(operation, result, request_id)
            return Response(
                body, status=200, content_type=XML, headers={"x-amzn-RequestId": request_id}
            )
        except errors.Ec2Error as error:
            return _error_response(error, request_id)
        except Exception as failure:
            if isinstance(failure, sqlite3.OperationalError) and _out_of_space(failure):
                log.error("state store failure in request %s: %s", request_id, failure)
                return _error_response(
                    errors.Unavailable(
                        f"fakestor cannot record state ({failure}); free space in its data "
                        "dir and retry."
                    ),
                    request_id,
                )
            log.exception("internal error in request %s", request_id)
            return _error_response(
                errors.InternalError(
                    f"fakestor failed to handle this request; the server log has the "
                    f"details under request id {request_id}."
                ),
                request_id,
            )

    return dispatch
