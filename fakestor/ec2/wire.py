"""EC2 Query protocol on the server side, driven by botocore's EC2 service model.

`parse_request` turns flat `Filter.1.Value.2=x` parameters into the structured
input an operation's shape describes; `serialize_response` writes a result dict
as the XML EC2 returns. Nothing here is written per action.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from xml.etree import ElementTree

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from fakestor import errors
from fakestor.control.resources import to_wire_time

EC2_XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"

# Parameters every request may carry besides the operation's own: the action,
# the API version and the signature (query-string SigV2/SigV4 signing).
PROTOCOL_PARAMETERS = frozenset(
    {
        "Action",
        "Version",
        "AWSAccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "Timestamp",
        "Expires",
        "SecurityToken",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)


@functools.cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2")


def operation_model(action: str) -> OperationModel:
    model = service_model()
    if action not in model.operation_names:
        raise errors.InvalidAction(action)
    return model.operation_model(action)


def _query_name(member: Shape, member_name: str) -> str:
    """The name of a member on the wire, exactly as botocore's EC2 serializer writes it."""
    if "queryName" in member.serialization:
        return str(member.serialization["queryName"])
    if "name" in member.serialization:
        name = str(member.serialization["name"])
        return name[0].upper() + name[1:]
    return member_name


_Tree = dict[str, "_Tree | str"]


def _tree(params: Mapping[str, str]) -> _Tree:
    """Split dotted keys: {"Filter.1.Name": "x"} -> {"Filter": {"1": {"Name": "x"}}}."""
    root: _Tree = {}
    for key, value in params.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if isinstance(child, str):
                raise errors.InvalidParameterValue(
                    f"Parameter {key} conflicts with parameter {'.'.join(parts[:-1])}"
                )
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise errors.InvalidParameterValue(f"Parameter {key} must not have a plain value")
        node[parts[-1]] = value
    return root


# Characters XML 1.0 cannot carry: a value holding one could never be sent back.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", re.ASCII)


def _scalar(shape: Shape, value: str, path: str) -> Any:
    kind = shape.type_name
    bad = _NOT_XML.search(value)
    if bad:
        raise errors.InvalidParameterValue(
            f"Value for parameter {path} holds the control character "
            f"U+{ord(bad.group()):04X}, which EC2 does not accept."
        )
    if kind == "string":
        enum = shape.metadata.get("enum")
        open_enum = path.split(".")[-1] in _OPEN_ENUMS or shape.name in _OPEN_ENUMS
        if enum and value not in enum and not open_enum:
            raise errors.InvalidParameterValue(
                f"Value ({value}) for parameter {path} is invalid. Valid values: {', '.join(enum)}."
            )
        return value
    if kind in ("integer", "long"):
        if not _INTEGER.fullmatch(value):
            raise errors.InvalidParameterValue(
                f"Value ({value}) for parameter {path} is invalid. Expected an integer."
            )
        return int(value)
    if kind in ("float", "double"):
        if not _NUMBER.fullmatch(value):
            raise errors.InvalidParameterValue(
                f"Value ({value}) for parameter {path} is invalid. Expected a number."
            )
        return float(value)
    if kind == "boolean":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise errors.InvalidParameterValue(
                f"Value ({value}) for parameter {path} is invalid. Expected 'true' or 'false'."
            )
        return lowered == "true"
    if kind == "timestamp":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise errors.InvalidParameterValue(
                f"Value ({value}) for parameter {path} is invalid. Expected an ISO 8601 time."
            ) from None
    return value


# String parameters (or enum shapes) whose enum in the model is advisory: we check them
# ourselves with a better message (VolumeType names the valid types and is checked by the
# rules; an InstanceType gets EC2's own error from the instance type table).
_OPEN_ENUMS = frozenset({"VolumeType", "Attribute", "InstanceType"})


def _value(shape: Shape, node: _Tree | str, path: str) -> Any:
    if isinstance(shape, StructureShape):
        if isinstance(node, str):
            raise errors.InvalidParameterValue(
                f"Parameter {path} is a structure; give its members as {path}.<Name>"
            )
        return _structure(shape, node, path + ".")
    if isinstance(shape, ListShape):
        if isinstance(node, str):
            raise errors.InvalidParameterValue(
                f"Parameter {path} is a list; give its items as {path}.1, {path}.2, ..."
            )
        items = []
        for index, child in node.items():
            if not re.fullmatch("[1-9][0-9]{0,5}", index, re.ASCII):
                raise errors.UnknownParameter(f"{path}.{index}")
            items.append((int(index), _value(shape.member, child, f"{path}.{index}")))
        return [value for _, value in sorted(items, key=lambda item: item[0])]
    if isinstance(shape, MapShape):
        raise errors.InvalidParameterValue(f"Parameter {path} is not supported")
    if not isinstance(node, str):
        raise errors.UnknownParameter(f"{path}.{next(iter(node))}")
    return _scalar(shape, node, path.rstrip("."))


def _structure(shape: StructureShape, node: _Tree, prefix: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    seen: set[str] = set()
    for member_name, member in shape.members.items():
        wire_name = _query_name(member, member_name)
        if wire_name in node:
            seen.add(wire_name)
            result[member_name] = _value(member, node[wire_name], prefix + wire_name)
    for key in node:
        if key not in seen and not (prefix == "" and key in PROTOCOL_PARAMETERS):
            raise errors.UnknownParameter(prefix + key)
    for required in shape.required_members:
        if required not in result:
            raise errors.MissingParameter(_query_name(shape.members[required], required))
    return result


def parse_request(operation: OperationModel, params: Mapping[str, str]) -> dict[str, Any]:
    """The operation's input as a dict keyed by botocore member names."""
    shape = operation.input_shape
    if shape is None:
        extra = [key for key in params if key not in PROTOCOL_PARAMETERS]
        if extra:
            raise errors.UnknownParameter(extra[0])
        return {}
    return _structure(shape, _tree(params), "")


def _text(shape: Shape, value: Any) -> str:
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp" and isinstance(value, datetime):
        return to_wire_time(value)
    return str(value)


def _element_name(shape: Shape, default: str) -> str:
    return str(shape.serialization.get("name", default))


def _write(parent: ElementTree.Element, shape: Shape, name: str, value: Any) -> None:
    if value is None:
        return
    element = ElementTree.SubElement(parent, name)
    if isinstance(shape, StructureShape):
        for member_name, member in shape.members.items():
            if member_name in value:
                _write(element, member, _element_name(member, member_name), value[member_name])
        unknown = set(value) - set(shape.members)
        if unknown:
            raise KeyError(f"{shape.name} has no member(s) {sorted(unknown)}")
    elif isinstance(shape, ListShape):
        item_name = _element_name(shape.member, "item")
        for item in value:
            _write(element, shape.member, item_name, item)
    else:
        element.text = _text(shape, value)


def serialize_response(
    operation: OperationModel, result: Mapping[str, Any], request_id: str
) -> bytes:
    """The XML body EC2 sends for `operation` with output `result`."""
    root = ElementTree.Element(f"{operation.name}Response", xmlns=EC2_XMLNS)
    ElementTree.SubElement(root, "requestId").text = request_id
    shape = operation.output_shape
    if shape is not None:
        for member_name, member in shape.members.items():
            if member_name in result:
                _write(root, member, _element_name(member, member_name), result[member_name])
        unknown = set(result) - set(shape.members)
        if unknown:
            raise KeyError(f"{shape.name} has no member(s) {sorted(unknown)}")
    elif result:
        raise KeyError(f"{operation.name} has no output, got {sorted(result)}")
    return _document(root)


def _document(root: ElementTree.Element) -> bytes:
    # ElementTree leaves \r raw, which XML parsers read back as \n: write it as a reference.
    body = ElementTree.tostring(root).replace(b"\r", b"&#13;")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def serialize_error(code: str, message: str, request_id: str) -> bytes:
    """EC2's error document."""
    root = ElementTree.Element("Response")
    error = ElementTree.SubElement(ElementTree.SubElement(root, "Errors"), "Error")
    ElementTree.SubElement(error, "Code").text = code
    # A message may quote the client's input: characters XML cannot carry are replaced.
    ElementTree.SubElement(error, "Message").text = _NOT_XML.sub("\ufffd", message)
    ElementTree.SubElement(root, "RequestID").text = request_id
    return _document(root)
