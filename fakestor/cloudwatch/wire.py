"""CloudWatch's JSON protocols on the server side, driven by botocore's model.

CloudWatch's model offers `smithy-rpc-v2-cbor`, `json` and `query`; botocore 1.44 (and
the aws CLI on it) speaks `json` (`POST /` with `X-Amz-Target:
GraniteServiceVersion20100801.<Op>`), and newer clients Smithy RPC v2 CBOR (`POST
/service/<Service>/operation/<Op>`). Both carry the same data model, so one codec per
encoding: `parse_request` checks the body against the operation's input shape;
`serialize_response` writes the output (timestamps as epoch times); `serialize_error`
writes the error structure and, since CloudWatch is "awsQueryCompatible", the
`x-amzn-query-error` header that gives clients the error code they knew from the query
protocol (`InvalidParameterValue`). Nothing here is per operation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

SERVICE = "cloudwatch"
CBOR = "cbor"
JSON = "json"
CONTENT_TYPES = {CBOR: "application/cbor", JSON: "application/x-amz-json-1.0"}


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model(SERVICE)


class CloudWatchError(Exception):
    """An error of the service model; `shape` names it (InvalidParameterValueException)."""

    shape = "InvalidParameterValueException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        return str(service_model().shape_for(self.shape).metadata["error"]["code"])

    @property
    def status(self) -> int:
        return int(service_model().shape_for(self.shape).metadata["error"]["httpStatusCode"])


class InvalidParameterValue(CloudWatchError):
    shape = "InvalidParameterValueException"


class MissingParameter(CloudWatchError):
    shape = "MissingRequiredParameterException"


class InvalidParameterCombination(CloudWatchError):
    shape = "InvalidParameterCombinationException"


class InvalidNextToken(CloudWatchError):
    shape = "InvalidNextToken"


class InternalServiceError(CloudWatchError):
    shape = "InternalServiceFault"


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def operation_model(name: str) -> OperationModel | None:
    if name not in service_model().operation_names:
        return None
    return service_model().operation_model(name)


def _decode(codec: str, body: bytes) -> Any:
    import cbor2  # here, not at import: the plugin's root filesystem has no cbor2

    try:
        return cbor2.loads(body) if codec == CBOR else json.loads(body)
    except (cbor2.CBORDecodeError, ValueError, EOFError) as failure:
        raise InvalidParameterValue(
            f"The request body is not valid {codec.upper()}: {failure}"
        ) from None


def _encode(codec: str, value: Any) -> bytes:
    if codec == CBOR:
        import cbor2

        return bytes(cbor2.dumps(value, datetime_as_timestamp=True))
    return json.dumps(value, default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def parse_request(operation: OperationModel, body: bytes, codec: str = CBOR) -> dict[str, Any]:
    data = _decode(codec, body) if body else {}
    shape = operation.input_shape
    if shape is None:
        return {}
    return _structure(shape, data, "")


def _structure(shape: StructureShape, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidParameterValue(f"The parameter {path or 'body'} must be a structure.")
    result: dict[str, Any] = {}
    for name, member in shape.members.items():
        if name in value and value[name] is not None:
            result[name] = _value(member, value[name], f"{path}.{name}" if path else name)
    for name in shape.required_members:
        if name not in result:
            where = f"{path}.{name}" if path else name
            raise MissingParameter(f"The parameter {where} is required.")
    return result


def _value(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type_name
    if isinstance(shape, StructureShape):
        return _structure(shape, value, path)
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            raise InvalidParameterValue(f"The parameter {path} must be a list.")
        _check_length(shape, len(value), path)
        return [
            _value(shape.member, item, f"{path}.member.{i + 1}") for i, item in enumerate(value)
        ]
    if isinstance(shape, MapShape):
        if not isinstance(value, Mapping):
            raise InvalidParameterValue(f"The parameter {path} must be a map.")
        return {str(k): _value(shape.value, v, f"{path}.{k}") for k, v in value.items()}
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidParameterValue(f"The parameter {path} must be a string.")
        _check_length(shape, len(value), path)
        allowed = getattr(shape, "enum", None)
        if allowed and value not in allowed:
            raise InvalidParameterValue(
                f"The parameter {path} must be one of {', '.join(allowed)}; got {value!r}."
            )
        return value
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameterValue(f"The parameter {path} must be an integer.")
        _check_range(shape, value, path)
        return value
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParameterValue(f"The parameter {path} must be a number.")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidParameterValue(f"The parameter {path} must be a boolean.")
        return value
    if kind == "timestamp":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        raise InvalidParameterValue(f"The parameter {path} must be a timestamp.")
    if kind == "blob":
        if not isinstance(value, bytes):
            raise InvalidParameterValue(f"The parameter {path} must be a blob.")
        return value
    return value


def _check_length(shape: Shape, length: int, path: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and length < low:
        raise InvalidParameterValue(f"The parameter {path} must be at least {low} long.")
    if high is not None and length > high:
        raise InvalidParameterValue(f"The parameter {path} must be at most {high} long.")


def _check_range(shape: Shape, value: int, path: str) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        raise InvalidParameterValue(f"The parameter {path} must be at least {low}.")
    if high is not None and value > high:
        raise InvalidParameterValue(f"The parameter {path} must be at most {high}.")


def _headers(codec: str) -> dict[str, str]:
    headers = {"Content-Type": CONTENT_TYPES[codec]}
    if codec == CBOR:
        headers["smithy-protocol"] = "rpc-v2-cbor"
    return headers


def serialize_response(
    operation: OperationModel, result: Mapping[str, Any], codec: str = CBOR
) -> Response:
    shape = operation.output_shape
    body = _to_wire(shape, result) if shape is not None else {}
    return Response(200, _encode(codec, body), _headers(codec))


def _to_wire(shape: Shape, value: Any) -> Any:
    if isinstance(shape, StructureShape):
        return {
            name: _to_wire(member, value[name])
            for name, member in shape.members.items()
            if value.get(name) is not None
        }
    if isinstance(shape, ListShape):
        return [_to_wire(shape.member, item) for item in value]
    if isinstance(shape, MapShape):
        return {key: _to_wire(shape.value, item) for key, item in value.items()}
    if shape.type_name in ("double", "float"):
        return float(value)
    return value


def unknown_operation(name: str, codec: str = CBOR) -> Response:
    """Smithy's answer to an operation the service does not have."""
    body = {"__type": "UnknownOperationException", "message": f"Unknown operation {name}."}
    return Response(404 if codec == CBOR else 400, _encode(codec, body), _headers(codec))


def not_served(name: str, codec: str = CBOR) -> Response:
    """An operation of CloudWatch's model that fakestor does not serve (yet)."""
    body = {
        "__type": "NotImplemented",
        "message": f"fakestor does not implement CloudWatch {name}; it serves ListMetrics, "
        "GetMetricStatistics and GetMetricData for the AWS/EBS namespace.",
    }
    return Response(501, _encode(codec, body), _headers(codec))


def serialize_error(error: CloudWatchError, codec: str = CBOR) -> Response:
    body = {"__type": f"com.amazonaws.cloudwatch#{error.shape}", "message": error.message}
    kind = "Sender" if error.status < 500 else "Receiver"
    headers = {**_headers(codec), "x-amzn-query-error": f"{error.code};{kind}"}
    return Response(error.status, _encode(codec, body), headers)
