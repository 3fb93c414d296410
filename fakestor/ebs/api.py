"""The Flask blueprint that answers the EBS direct APIs (`/snapshots...`) for requests whose
SigV4 scope names `ebs`; other services' requests on these paths get their own 501."""

from __future__ import annotations

from flask import Blueprint

from fakestor.control.regions import Regions
from fakestor.direct_errors import (
    AccessDeniedException,
    InternalServerException,
    RequestThrottledException,
    UnknownOperationException,
    ValidationException,
)
from fakestor.ebs.actions import ACTIONS
from fakestor.rest_json import RestJsonService, dispatcher
from fakestor.throttling import Throttle

EBS = RestJsonService(
    name="ebs",
    actions=ACTIONS,
    invalid=ValidationException,
    unknown_operation=UnknownOperationException,
    no_such_region=AccessDeniedException,
    internal=InternalServerException,
    throttled=RequestThrottledException,
)


def ebs_blueprint(regions: Regions, throttle: Throttle | None = None) -> Blueprint:
    blueprint = Blueprint("ebs", __name__)
    dispatch = dispatcher(EBS, regions, throttle)
    methods = ["GET", "POST", "PUT"]
    blueprint.add_url_rule("/snapshots", "dispatch", dispatch, methods=methods)
    blueprint.add_url_rule("/snapshots/<path:rest>", "dispatch", dispatch, methods=methods)
    return blueprint
