"""`/fakestor/faults`: the server-level faults (control/server_faults.py) for `fakestor fault`
and the UI, as JSON: GET lists them with the volumes' fault tags, PUT sets one, DELETE clears.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from fakestor.control import faults, server_faults
from fakestor.control.context import Ebs
from fakestor.fault_cli import PATH


def active_faults(ebs: Ebs) -> dict[str, list[dict[str, Any]]]:
    """Every fault in force: the server's, and the fault tags of the region's volumes."""
    return {
        "server": [
            {"scope": f.scope, "name": f.name, "value": f.value}
            for f in server_faults.list_faults(ebs)
        ],
        "tags": [
            {"resource_id": f.resource_id, "name": f.kind, "value": f.value}
            for f in faults.tag_faults(ebs)
        ],
    }


def _refused(message: str) -> Response:
    answer = jsonify({"error": message})
    answer.status_code = 400
    return answer


def faults_blueprint(ebs: Ebs) -> Blueprint:
    blueprint = Blueprint("faults", __name__)

    @blueprint.route(PATH, methods=["GET"])
    def list_faults() -> Response:
        return jsonify(active_faults(ebs))

    @blueprint.route(PATH, methods=["PUT"])
    def set_fault() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("scope", "name", "value")
        ):
            return _refused('send {"scope": ..., "name": ..., "value": ...} as JSON')
        try:
            fault = server_faults.parse(body["scope"], body["name"], body["value"])
        except ValueError as failure:
            return _refused(str(failure))
        server_faults.set_fault(ebs, fault)
        return jsonify({"set": fault.describe()})

    @blueprint.route(PATH, methods=["DELETE"])
    def clear_faults() -> Response:
        scope = request.args.get("scope")
        if not scope:
            return _refused("name the scope to clear: ?scope=zone:NAME (and &name=FAULT)")
        cleared = server_faults.clear_faults(ebs, scope, request.args.get("name"))
        return jsonify({"cleared": cleared})

    return blueprint
