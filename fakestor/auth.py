"""SigV4 verification of API requests against the key pairs a server is given: botocore's own
signer recomputes each request's signature, and refusals are in the protocol of the service
the request was signed for (EC2's XML codes, or the JSON error types of AWS's JSON services)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from flask import Request, Response
from werkzeug.exceptions import RequestEntityTooLarge

from fakestor.ec2 import wire
from fakestor.services import PROTOCOLS, raw_path

ALGORITHM = "AWS4-HMAC-SHA256"
# "In most cases, a request must reach AWS within five minutes of the time stamp in the
# request" (IAM User Guide, "AWS Signature Version 4 for API requests").
ALLOWED_SKEW = timedelta(minutes=5)
UNSIGNED_PAYLOADS = ("UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
AMZ_DATE = "%Y%m%dT%H%M%SZ"

_HEADER = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_CREDENTIAL = re.compile(
    r"^(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request$"
)


class CredentialsError(Exception):
    """The credentials file cannot be used; the message says why in one line."""


def load_credentials(path: Path) -> dict[str, str]:
    """Access key id -> secret, from lines `ACCESS_KEY_ID SECRET_ACCESS_KEY` (blank lines and
    lines starting with # are skipped)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as failure:
        reason = failure.strerror if isinstance(failure, OSError) else "not text"
        raise CredentialsError(f"cannot read credentials file {path}: {reason}") from None
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise CredentialsError(
                f"{path} line {number}: expected 'ACCESS_KEY_ID SECRET_ACCESS_KEY', "
                f"found {len(fields)} field(s)"
            )
        pairs[fields[0]] = fields[1]
    if not pairs:
        raise CredentialsError(f"{path} holds no 'ACCESS_KEY_ID SECRET_ACCESS_KEY' line")
    return pairs


def is_loopback(address: str) -> bool:
    """Whether a listen address (an IP address, or a host name resolved by the caller) is
    on loopback only; 0.0.0.0 and :: listen everywhere."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class Refusal(Exception):
    """Why a request's signature is not accepted, as EC2 and as a JSON service say it."""

    def __init__(
        self,
        ec2_code: str,
        ec2_status: int,
        json_type: str,
        message: str,
        json_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.ec2_code = ec2_code
        self.ec2_status = ec2_status
        self.json_type = json_type
        self.message = message
        self.json_message = json_message or message


def _auth_failure(unsigned: bool) -> Refusal:
    # EC2's answer to a missing signature or an access key it does not know.
    if unsigned:
        json_type, json_message = (
            "MissingAuthenticationTokenException",
            ("Missing Authentication Token"),
        )
    else:
        json_type = "UnrecognizedClientException"
        json_message = "The security token included in the request is invalid."
    return Refusal(
        "AuthFailure",
        401,
        json_type,
        "AWS was not able to validate the provided access credentials",
        json_message,
    )


def _mismatch() -> Refusal:
    return Refusal(
        "SignatureDoesNotMatch",
        403,
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.",
    )


def _incomplete(message: str) -> Refusal:
    return Refusal("IncompleteSignature", 400, "IncompleteSignatureException", message)


class _ReceivedSigV4(SigV4Auth):
    """botocore's SigV4 signer over exactly the headers the client says it signed."""

    def __init__(
        self,
        credentials: Credentials,
        service: str,
        region: str,
        signed: list[str],
        query: list[tuple[str, str]],
    ) -> None:
        super().__init__(credentials, service, region)
        self._signed = signed
        self._query = query

    def canonical_query_string(self, request: AWSRequest) -> str:
        # The decoded query encoded again as SigV4 wants (RFC 3986 unreserved characters
        # kept), sorted by name then value, repeated names included.
        pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in self._query)
        return "&".join(f"{k}={v}" for k, v in pairs)

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                headers[name] = value
        return headers


@dataclass(frozen=True)
class _Signed:
    key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    timestamp: str
    expires: int | None  # presigned URLs only
    params: list[tuple[str, str]]  # the query, less X-Amz-Signature


def _parse(request: Request) -> _Signed | None:
    """The request's signature elements; None if it carries none at all."""
    params = list(request.args.items(multi=True))
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        if not authorization.startswith(ALGORITHM):
            raise _incomplete(f"Authorization header must use {ALGORITHM} (Signature Version 4).")
        match = _HEADER.match(authorization)
        if match is None:
            raise _incomplete(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters. Authorization={authorization}"
            )
        credential, signed, signature = match.group("credential", "signed", "signature")
        timestamp = request.headers.get("X-Amz-Date")
        expires = None
    elif "X-Amz-Signature" in request.args:
        query = request.args
        if query.get("X-Amz-Algorithm") != ALGORITHM:
            raise _incomplete(f"X-Amz-Algorithm must be {ALGORITHM}.")
        credential = query.get("X-Amz-Credential", "")
        signed = query.get("X-Amz-SignedHeaders", "")
        signature = query.get("X-Amz-Signature", "")
        timestamp = query.get("X-Amz-Date")
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            raise _incomplete("X-Amz-Expires must be a number of seconds.") from None
        params = [(k, v) for k, v in params if k != "X-Amz-Signature"]
    else:
        return None
    scope = _CREDENTIAL.match(credential)
    if scope is None:
        raise _incomplete(
            f"Credential must be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, "
            f"not '{credential}'."
        )
    if timestamp is None:
        raise _incomplete("The request must carry X-Amz-Date (Signature Version 4).")
    return _Signed(
        key=scope.group("key"),
        date=scope.group("date"),
        region=scope.group("region"),
        service=scope.group("service"),
        signed_headers=[name for name in signed.lower().split(";") if name],
        signature=signature,
        timestamp=timestamp,
        expires=expires,
        params=params,
    )


def _check_time(signed: _Signed, now: datetime) -> None:
    try:
        when = datetime.strptime(signed.timestamp, AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise _incomplete(
            f"X-Amz-Date must be in the form YYYYMMDD'T'HHMMSS'Z', not '{signed.timestamp}'."
        ) from None
    late = now - (when + timedelta(seconds=signed.expires or 0))
    if late > ALLOWED_SKEW or when - now > ALLOWED_SKEW:
        # EC2's wording; the JSON services' (Signature expired / not yet current) as AWS's
        # front end writes it.
        if when > now:
            detail = (
                f"Signature not yet current: {signed.timestamp} is still later than "
                f"{(now + ALLOWED_SKEW).strftime(AMZ_DATE)} ({now.strftime(AMZ_DATE)} + 5 min.)"
            )
        else:
            detail = (
                f"Signature expired: {signed.timestamp} is now earlier than "
                f"{(now - ALLOWED_SKEW).strftime(AMZ_DATE)} ({now.strftime(AMZ_DATE)} - 5 min.)"
            )
        raise Refusal(
            "RequestExpired", 400, "InvalidSignatureException", "Request has expired.", detail
        )


def verify(request: Request, credentials: Mapping[str, str], now: datetime) -> None:
    """Accept the request's SigV4 signature, or raise Refusal."""
    signed = _parse(request)
    if signed is None or signed.key not in credentials:
        raise _auth_failure(unsigned=signed is None)
    if signed.expires is None and "x-amz-date" not in signed.signed_headers:
        raise _incomplete("X-Amz-Date must be among the signed headers.")
    _check_time(signed, now)
    body = request.get_data(cache=True)
    declared = request.headers.get("X-Amz-Content-SHA256")
    payload_hash = hashlib.sha256(body).hexdigest()
    if declared and declared not in UNSIGNED_PAYLOADS and declared != payload_hash:
        raise _mismatch()
    received = AWSRequest(
        method=request.method,
        url=f"{request.scheme}://{request.host}{raw_path(request)}",
        data=body,
    )
    for name, value in request.headers.items():
        received.headers[name] = value  # HTTPHeaders keeps repeated headers
    received.context["timestamp"] = signed.timestamp
    signer = _ReceivedSigV4(
        Credentials(signed.key, credentials[signed.key]),
        signed.service,
        signed.region,
        signed.signed_headers,
        signed.params,
    )
    canonical = signer.canonical_request(received)
    expected = signer.signature(signer.string_to_sign(received, canonical), received)
    if not hmac.compare_digest(expected, signed.signature):
        raise _mismatch()


# The Query services' codes for the same failures (AWS's "Common Errors"), which the
# services that are awsQueryCompatible (CloudWatch) also send in x-amzn-query-error.
QUERY_CODES = {
    "AuthFailure": ("InvalidClientTokenId", 403),
    "SignatureDoesNotMatch": ("SignatureDoesNotMatch", 403),
}


def _query_code(refusal: Refusal) -> tuple[str, int]:
    if refusal.json_type == "MissingAuthenticationTokenException":
        return "MissingAuthenticationToken", 403
    return QUERY_CODES.get(refusal.ec2_code, (refusal.ec2_code, refusal.ec2_status))


def refusal_response(request: Request, refusal: Refusal, service: str | None) -> Response:
    """The refusal in the protocol of the service the request names (EC2 if unsigned)."""
    request_id = str(uuid.uuid4())
    if service == "monitoring" and (
        request.path.startswith("/service/") or "X-Amz-Target" in request.headers
    ):
        # CloudWatch's CBOR and JSON protocols: the JSON type, with the Query code in
        # x-amzn-query-error, which botocore reports as the error code (this service is
        # awsQueryCompatible). AWS documents no such answer; it is fakestor's choice.
        code, _ = _query_code(refusal)
        cbor = request.path.startswith("/service/")
        document = {"__type": refusal.json_type, "message": refusal.json_message}
        headers = {"x-amzn-RequestId": request_id, "x-amzn-query-error": f"{code};Sender"}
        if cbor:
            headers["smithy-protocol"] = "rpc-v2-cbor"
            import cbor2  # here: the plugin's root filesystem has no cbor2
        return Response(
            cbor2.dumps(document) if cbor else json.dumps(document),
            status=403,
            headers=headers,
            content_type="application/cbor" if cbor else "application/x-amz-json-1.0",
        )
    if PROTOCOLS.get(service or "ec2", "json") in ("rest-json", "json"):
        # AWS's JSON services answer every signature failure with 403 and these types
        # (botocore's ebs model documents none of them; they are those AWS's front end sends).
        json_type, message = refusal.json_type, refusal.json_message
        return Response(
            json.dumps({"__type": json_type, "message": message}),
            status=403,
            headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": json_type},
            content_type="application/json",
        )
    if PROTOCOLS.get(service or "ec2") == "query":
        code, status = _query_code(refusal)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{escape(refusal.message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return Response(
            body, status=status, headers={"x-amzn-RequestId": request_id}, content_type="text/xml"
        )
    return Response(
        wire.serialize_error(refusal.ec2_code, refusal.message, request_id),
        status=refusal.ec2_status,
        headers={"x-amzn-RequestId": request_id},
        content_type="text/xml;charset=UTF-8",
    )


def body_too_large(request: Request) -> bool:
    """Whether the body is over the app's limit (the API's own handlers refuse it)."""
    try:
        request.get_data(cache=True)
    except RequestEntityTooLarge:
        return True
    return False
