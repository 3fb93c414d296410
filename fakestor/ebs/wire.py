"""The rest-json protocol on the server side, driven by a botocore service model.

`match` finds the operation from the method and path (the model's requestUri templates);
`parse_request` reads its input from URI labels, the query string, headers and the JSON
or blob payload, checking the model's types and constraints; `serialize_response` and
`serialize_error` write what botocore's rest-json parser reads. Nothing here is per action.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import unquote

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from fakestor.direct_errors import DirectError, ValidationException


@functools.cache
def service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


@dataclass(frozen=True)
class _Route:
    operation: OperationModel
    method: str
    path: re.Pattern[str]


@functools.cache
def _routes(service: str) -> list[_Route]:
    model = service_model(service)
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        template = operation.http["requestUri"].split("?")[0]
        pattern = re.sub(
            r"\\\{([A-Za-z0-9_]+)(\\\+)?\\\}",
            lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})",
            re.escape(template),
        )
        routes.append(_Route(operation, operation.http["method"], re.compile(pattern)))
    return routes


@dataclass
class Request:
    """What of an HTTP request the parser reads."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    labels: dict[str, str] = field(default_factory=dict)


def match(service: str, request: Request) -> OperationModel | None:
    """The operation `request` is for; its URI labels are stored in `request.labels`."""
    for route in _routes(service):
        found = route.path.fullmatch(request.path)
        if found and route.method == request.method:
            request.labels = {k: unquote(v) for k, v in found.groupdict().items()}
            return route.operation
    return None


def _invalid(path: str, value: object, why: str) -> ValidationException:
    return ValidationException(f"Value ({value!s:.80}) for parameter {path} is invalid: {why}.")


# Java regex classes some models use (rbin's TagKey) in Python's re, a little wider (letters
# and digits both become \w, separators \s) since re has no class of letters alone.
_JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\w", r"\p{Z}": r"\s"}


@functools.cache
def _pattern(text: str) -> re.Pattern[str] | None:
    """A model pattern compiled for Python; None for one Python cannot read (rbin's RuleArn
    repeats a repeat), which is then left to the action to check."""
    for java, python in _JAVA_CLASSES.items():
        text = text.replace(java, python)
    try:
        return re.compile(text)
    except re.error:
        return None


def _check(shape: Shape, value: Any, path: str) -> Any:
    """`value` if it satisfies the model's constraints of `shape`."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "string":
        if "enum" in meta and value not in meta["enum"]:
            raise _invalid(path, value, f"valid values are {', '.join(meta['enum'])}")
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and not pattern.search(value):
            raise _invalid(path, value, f"it must match the pattern {meta['pattern']}")
    sized = len(value) if kind in ("string", "list", "map", "blob") else value
    if "min" in meta and sized < meta["min"]:
        what = "length" if kind != "integer" and kind != "long" else "value"
        raise _invalid(path, value, f"the minimum {what} is {meta['min']}")
    if "max" in meta and sized > meta["max"]:
        what = "length" if kind != "integer" and kind != "long" else "value"
        raise _invalid(path, value, f"the maximum {what} is {meta['max']}")
    return value


def _from_text(shape: Shape, text: str, path: str) -> Any:
    """A scalar from a URI label, query string or header."""
    kind = shape.type_name
    if kind in ("integer", "long"):
        if not re.fullmatch(r"-?[0-9]+", text, re.ASCII):
            raise _invalid(path, text, "expected an integer")
        return _check(shape, int(text), path)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise _invalid(path, text, "expected true or false")
        return text == "true"
    if kind == "timestamp":
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _invalid(path, text, "expected an ISO 8601 time") from None
    return _check(shape, text, path)


def _from_json(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            raise _invalid(path, value, "expected an object")
        return _structure_from_json(shape, value, path + ".")
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            raise _invalid(path, value, "expected a list")
        items = [_from_json(shape.member, item, f"{path}[{i}]") for i, item in enumerate(value)]
        return _check(shape, items, path)
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            raise _invalid(path, value, "expected an object")
        return {
            _from_json(shape.key, k, path): _from_json(shape.value, v, f"{path}.{k}")
            for k, v in value.items()
        }
    expected: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "long": int,
        "boolean": bool,
        "double": (int, float),
        "float": (int, float),
    }
    wanted = expected.get(kind)
    if wanted is not None:
        if not isinstance(value, wanted) or (kind in ("integer", "long") and value is True):
            raise _invalid(path, value, f"expected a {kind}")
        return _check(shape, value, path)
    if kind == "timestamp":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        raise _invalid(path, value, "expected seconds since the epoch")
    if kind == "blob":
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(path, "...", "expected base64") from None
    return value


def _structure_from_json(
    shape: StructureShape, body: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    names: dict[str, str] = {}
    for member_name, member in shape.members.items():
        if "location" in member.serialization:
            continue
        names[str(member.serialization.get("name", member_name))] = member_name
    for key, value in body.items():
        if key not in names:
            raise ValidationException(f"The parameter {prefix}{key} is not recognized.")
        if value is not None:
            result[names[key]] = _from_json(shape.members[names[key]], value, prefix + key)
    for required in shape.required_members:
        member = shape.members[required]
        if required not in result and "location" not in member.serialization:
            wire_name = str(member.serialization.get("name", required))
            raise ValidationException(
                f"The request must contain the parameter {prefix}{wire_name}."
            )
    return result


def parse_request(operation: OperationModel, request: Request) -> dict[str, Any]:
    """The operation's input as a dict keyed by botocore member names."""
    shape = operation.input_shape
    if shape is None:
        return {}
    result: dict[str, Any] = {}
    payload = shape.serialization.get("payload")
    headers = {name.lower(): value for name, value in request.headers.items()}
    for member_name, member in shape.members.items():
        location = member.serialization.get("location")
        wire_name = str(member.serialization.get("name", member_name))
        if location == "uri":
            if wire_name in request.labels:
                result[member_name] = _from_text(member, request.labels[wire_name], wire_name)
        elif location == "querystring":
            values = request.query.get(wire_name)
            if values and isinstance(member, ListShape):
                result[member_name] = [_from_text(member.member, v, wire_name) for v in values]
            elif values:
                result[member_name] = _from_text(member, values[-1], wire_name)
        elif location == "header":
            if wire_name.lower() in headers:
                result[member_name] = _from_text(member, headers[wire_name.lower()], wire_name)
        elif member_name == payload:
            if member.type_name == "blob":
                result[member_name] = request.body
            elif request.body:
                result[member_name] = _from_json(member, _json_body(request.body), member_name)
    if payload is None and request.body:
        result.update(_structure_from_json(shape, _json_body(request.body), ""))
    for required in shape.required_members:
        if required not in result:
            wire_name = str(shape.members[required].serialization.get("name", required))
            raise ValidationException(f"The request must contain the parameter {wire_name}.")
    return result


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValidationException("The request body is not valid JSON.") from None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str


def _to_json(shape: Shape, value: Any) -> Any:
    if isinstance(shape, StructureShape):
        out = {}
        for member_name, member in shape.members.items():
            if value.get(member_name) is not None:
                name = str(member.serialization.get("name", member_name))
                out[name] = _to_json(member, value[member_name])
        unknown = set(value) - set(shape.members)
        if unknown:
            raise KeyError(f"{shape.name} has no member(s) {sorted(unknown)}")
        return out
    if isinstance(shape, ListShape):
        return [_to_json(shape.member, item) for item in value]
    if isinstance(shape, MapShape):
        return {k: _to_json(shape.value, v) for k, v in value.items()}
    if shape.type_name == "timestamp":
        return value.timestamp()  # rest-json's default in a body: epoch seconds
    if shape.type_name == "blob":
        return base64.b64encode(value).decode()
    return value


def _header_text(shape: Shape, value: Any) -> str:
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        return format_datetime(value.astimezone(UTC), usegmt=True)
    return str(value)


def serialize_response(operation: OperationModel, result: Mapping[str, Any]) -> Response:
    """The HTTP response of `operation` with output `result` (botocore member names)."""
    status = int(operation.http.get("responseCode", 200))
    shape = operation.output_shape
    if status == 204:  # No Content (rbin's DeleteRule): a body would break the HTTP framing
        return Response(status, {}, b"", "application/json")
    if shape is None:
        return Response(status, {}, b"{}", "application/json")
    unknown = set(result) - set(shape.members)
    if unknown:
        raise KeyError(f"{shape.name} has no member(s) {sorted(unknown)}")
    headers: dict[str, str] = {}
    body_members: dict[str, Any] = {}
    payload = shape.serialization.get("payload")
    payload_bytes: bytes | None = None
    for member_name, member in shape.members.items():
        value = result.get(member_name)
        if value is None:
            continue
        location = member.serialization.get("location")
        if location == "header":
            headers[str(member.serialization["name"])] = _header_text(member, value)
        elif member_name == payload:
            if member.type_name == "blob":
                payload_bytes = bytes(value)
            else:
                payload_bytes = json.dumps(_to_json(member, value)).encode()
        elif location is None:
            body_members[member_name] = value
    if payload_bytes is not None:
        blob = payload is not None and shape.members[payload].type_name == "blob"
        content_type = "application/octet-stream" if blob else "application/json"
        return Response(status, headers, payload_bytes, content_type)
    body = json.dumps(_to_json(shape, body_members)).encode()
    return Response(status, headers, body, "application/json")


def serialize_error(service: str, error: DirectError) -> Response:
    """The error document: `x-amzn-ErrorType` and the error shape's members as JSON."""
    model = service_model(service)
    body: dict[str, Any] = {"message": error.message}
    status = error.http_status
    shape = model.shape_for(error.code) if error.code in model.shape_names else None
    if isinstance(shape, StructureShape):
        body = {"Message": error.message}
        if error.reason is not None and "Reason" in shape.members:
            body["Reason"] = error.reason
        status = shape.metadata.get("error", {}).get("httpStatusCode", status)
    return Response(
        status,
        {"x-amzn-ErrorType": error.code},
        json.dumps(body).encode(),
        "application/json",
    )
