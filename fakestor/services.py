"""Which AWS service a request is for, from its SigV4 credential scope, and the error a
service fakestor does not serve (yet) answers with, in that service's own protocol."""

from __future__ import annotations

import json
import re
import uuid

from flask import Request, Response

from fakestor import errors
from fakestor.ec2 import wire

# ".../20261127/us-east-1/ebs/aws4_request": date, region, service.
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")

# The wire protocol of each service in botocore's models that fakestor may be asked for.
PROTOCOLS = {
    "ec2": "ec2",
    "ebs": "rest-json",
    "rbin": "rest-json",
    "kms": "json",
    "monitoring": "query",  # CloudWatch JSON and CBOR are served; its Query protocol is not
}


def service_of(request: Request) -> str | None:
    """The service named in the request's SigV4 credential scope; None if unsigned."""
    match = _scope_of(request)
    return match.group(2) if match else None


def region_of(request: Request) -> str | None:
    """The region named in the request's SigV4 credential scope; None if unsigned."""
    match = _scope_of(request)
    return match.group(1) if match else None


def raw_path(request: Request) -> str:
    """The path as the client sent it: a label that holds a `/` escaped as %2F (rbin's rule
    ARN in `/tags/{resourceArn}`) loses that in the decoded `request.path`, which signatures
    and URI templates need."""
    raw = request.environ.get("REQUEST_URI") or request.environ.get("RAW_URI") or ""
    path = str(raw).split("?", 1)[0]
    return path if path.startswith("/") else request.path


def _scope_of(request: Request) -> re.Match[str] | None:
    match = _SCOPE.search(request.headers.get("Authorization", ""))
    if match is None:
        match = _SCOPE.search("Credential=" + request.args.get("X-Amz-Credential", "x"))
    return match


def not_implemented(request: Request) -> Response:
    """A 501 for a path or service fakestor does not serve, shaped as its protocol wants."""
    service = service_of(request) or "ec2"
    request_id = str(uuid.uuid4())
    what = f"{request.method} {request.path}"
    message = f"fakestor does not implement this {service} API yet ({what})."
    headers = {"x-amzn-RequestId": request_id}
    protocol = PROTOCOLS.get(service, "json")
    if protocol in ("rest-json", "json"):
        headers["x-amzn-ErrorType"] = "NotImplemented"
        body = json.dumps({"__type": "NotImplemented", "message": message})
        content_type = (
            "application/json" if protocol == "rest-json" else "application/x-amz-json-1.1"
        )
        return Response(body, status=501, headers=headers, content_type=content_type)
    if protocol == "query":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>Sender</Type>'
            f"<Code>NotImplemented</Code><Message>{_xml(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return Response(body, status=501, headers=headers, content_type="text/xml")
    error = errors.InvalidAction(f"{what} (no EC2 action is served at this path)")
    body_bytes = wire.serialize_error(error.code, error.message, request_id)
    return Response(body_bytes, status=400, headers=headers, content_type="text/xml;charset=UTF-8")


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
