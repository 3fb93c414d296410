"""The Flask blueprint that answers the Recycle Bin API (`/rules...`, `/list-rules`,
`/tags/...`) for requests whose SigV4 scope names `rbin`; the rest-json wire is the one the
EBS direct APIs use, driven by botocore's `rbin` model."""

from __future__ import annotations

from flask import Blueprint

from fakestor.control.regions import Regions
from fakestor.rbin.actions import ACTIONS
from fakestor.rbin_errors import (
    RbinInternalServerException,
    RbinThrottlingException,
    RbinUnknownOperationException,
    RbinValidationException,
)
from fakestor.rest_json import RestJsonService, dispatcher
from fakestor.throttling import Throttle

RBIN = RestJsonService(
    name="rbin",
    actions=ACTIONS,
    invalid=RbinValidationException,
    unknown_operation=RbinUnknownOperationException,
    no_such_region=RbinValidationException,
    internal=RbinInternalServerException,
    throttled=RbinThrottlingException,
)


def rbin_blueprint(regions: Regions, throttle: Throttle | None = None) -> Blueprint:
    blueprint = Blueprint("rbin", __name__)
    dispatch = dispatcher(RBIN, regions, throttle)
    methods = ["GET", "POST", "PATCH", "DELETE"]
    for rule in ("/rules", "/rules/<path:rest>", "/list-rules", "/tags/<path:rest>"):
        blueprint.add_url_rule(rule, "dispatch", dispatch, methods=methods)
    return blueprint
