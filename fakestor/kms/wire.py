"""AWS's JSON protocol on the server side, driven by a botocore service model: the operation
comes from `X-Amz-Target` (`<targetPrefix>.<Operation>`), its input is the JSON body checked
against the model's shapes and constraints, its output and errors are JSON documents.

Nothing here is per action or per service; the shape readers are the rest-json ones
(fakestor/ebs/wire.py), whose constraint errors become this protocol's ValidationException.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.model import OperationModel

from fakestor import direct_errors
from fakestor.ebs.wire import _structure_from_json, _to_json, service_model
from fakestor.kms_errors import KmsError, UnknownOperationException, ValidationException


def content_type(service: str) -> str:
    version = service_model(service).metadata.get("jsonVersion", "1.0")
    return f"application/x-amz-json-{version}"


def operation_model(service: str, target: str | None) -> OperationModel:
    """The operation `X-Amz-Target: target` names; UnknownOperationException otherwise."""
    model = service_model(service)
    prefix = model.metadata["targetPrefix"] + "."
    name = target[len(prefix) :] if target and target.startswith(prefix) else None
    if name is None or name not in model.operation_names:
        raise UnknownOperationException(
            f"No operation of {model.metadata['serviceId']} is named by X-Amz-Target: "
            f"{target or '(missing)'}."
        )
    return model.operation_model(name)


def parse_request(operation: OperationModel, body: bytes) -> dict[str, Any]:
    """The operation's input, keyed by botocore member names."""
    shape = operation.input_shape
    if not body.strip():
        document: Any = {}
    else:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise ValidationException("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise ValidationException("The request body must be a JSON object.")
    if shape is None:
        return {}
    try:
        params = _structure_from_json(shape, document, "")
    except direct_errors.ValidationException as refused:
        raise ValidationException(refused.message) from None
    missing = [name for name in shape.required_members if name not in params]
    if missing:
        # AWS's own wording for a missing member (the Coral validation message).
        raise ValidationException(
            f"1 validation error detected: Value null at '{_camel(missing[0])}' failed to "
            "satisfy constraint: Member must not be null"
        )
    return params


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def serialize_response(operation: OperationModel, result: Mapping[str, Any]) -> bytes:
    shape = operation.output_shape
    if shape is None:
        return b"{}"
    return json.dumps(_to_json(shape, dict(result))).encode()


def serialize_error(error: KmsError) -> bytes:
    return json.dumps({"__type": error.code, "message": error.message}).encode()
