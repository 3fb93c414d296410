"""Docker's volume plugin protocol (POST /VolumeDriver.*) as a Flask app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, json, request

from fakestor.plugin.driver import PluginError, VolumeDriver

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


def create_plugin_app(driver: VolumeDriver) -> Flask:
    app = Flask("fakestor-plugin")

    def answer(body: dict[str, Any]) -> Response:
        return Response(json.dumps(body), status=200, content_type=CONTENT_TYPE)

    def endpoint(path: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        def view() -> Response:
            payload = request.get_json(force=True, silent=True) or {}
            if not isinstance(payload, dict):
                return answer({"Err": "the request body must be a JSON object"})
            try:
                return answer(handler(payload))
            except PluginError as failure:
                # Docker asks Get before every Create: "no such volume" there is routine.
                level = logging.DEBUG if path == "/VolumeDriver.Get" else logging.INFO
                log.log(level, "%s %s: %s", path, payload.get("Name", ""), failure)
                return answer({"Err": str(failure)})
            except Exception:
                log.exception("%s failed", path)
                return answer({"Err": f"fakestor plugin failed in {path}; its log has the details"})

        app.add_url_rule(path, path, view, methods=["POST"])

    def name_of(payload: dict[str, Any]) -> str:
        name = payload.get("Name")
        if not isinstance(name, str) or not name:
            raise PluginError("the request has no volume Name")
        return name

    def mount_id_of(payload: dict[str, Any]) -> str:
        return str(payload.get("ID") or "")

    def create(payload: dict[str, Any]) -> dict[str, Any]:
        driver.create(name_of(payload), payload.get("Opts"))
        return {"Err": ""}

    def remove(payload: dict[str, Any]) -> dict[str, Any]:
        driver.remove(name_of(payload))
        return {"Err": ""}

    def unmount(payload: dict[str, Any]) -> dict[str, Any]:
        driver.unmount(name_of(payload), mount_id_of(payload))
        return {"Err": ""}

    endpoint("/Plugin.Activate", lambda _: {"Implements": ["VolumeDriver"]})
    endpoint("/VolumeDriver.Create", create)
    endpoint("/VolumeDriver.Remove", remove)
    endpoint(
        "/VolumeDriver.Mount",
        lambda p: {"Mountpoint": driver.mount(name_of(p), mount_id_of(p)), "Err": ""},
    )
    endpoint("/VolumeDriver.Unmount", unmount)
    endpoint("/VolumeDriver.Path", lambda p: {"Mountpoint": driver.path(name_of(p)), "Err": ""})
    endpoint("/VolumeDriver.Get", lambda p: {"Volume": driver.get(name_of(p)), "Err": ""})
    endpoint("/VolumeDriver.List", lambda _: {"Volumes": driver.list(), "Err": ""})
    endpoint("/VolumeDriver.Capabilities", lambda _: {"Capabilities": driver.capabilities()})
    return app
