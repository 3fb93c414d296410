"""The front door at `/`: EC2 Query, KMS and CloudWatch (JSON, `X-Amz-Target`) all
post there, so a request goes to the service its SigV4 credential scope names."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Blueprint, Response, request

from fakestor.services import not_implemented, service_of

Handler = Callable[[], Response]

# Unsigned requests are EC2's, as they always were (the aws CLI with --no-sign-request).
UNSIGNED = "ec2"


def front_blueprint(handlers: Mapping[str, Handler]) -> Blueprint:
    """`/` for every service in `handlers` (service name in the scope -> handler); any
    other service's request gets that service's own 501."""
    blueprint = Blueprint("front", __name__)

    @blueprint.route("/", methods=["GET", "POST"])
    def dispatch() -> Response:
        handler = handlers.get(service_of(request) or UNSIGNED)
        if handler is None:
            return not_implemented(request)
        return handler()

    return blueprint
