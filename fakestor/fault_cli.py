"""`fakestor fault set|clear|list`: faults on a running server. A volume's faults are its
`fakestor:fault/NAME` tags, set over the EC2 API; a zone's, a volume type's or an action's
are the server's own, set through its /fakestor/faults endpoint."""

from __future__ import annotations

import argparse
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from fakestor.control import faults, server_faults

PATH = "/fakestor/faults"  # the server's endpoint (fakestor.faults_api)


class FaultError(Exception):
    """The command cannot be done; the message is one line for the user."""


def add_parser(commands: Any, default_endpoint: str) -> None:
    fault = commands.add_parser(
        "fault", help="inject faults into a running server (see README: Faults)"
    )
    fault.add_argument(
        "--endpoint",
        default=os.environ.get("FAKESTOR_ENDPOINT") or default_endpoint,
        help=f"the server (default $FAKESTOR_ENDPOINT, else {default_endpoint})",
    )
    fault.add_argument("--region", default=os.environ.get("AWS_REGION") or "us-east-1")
    actions = fault.add_subparsers(dest="fault_command", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="set faults: TARGET NAME=VALUE ...")
    set_.add_argument("target", help="a volume id, or zone:NAME, type:NAME, action:NAME")
    set_.add_argument(
        "faults",
        nargs="+",
        metavar="NAME=VALUE",
        help=f"on a volume: {', '.join(faults.FORMS)} (io=error:read:0-1m, attach=stuck:60, "
        "...); on a scope: capacity=none, error-rate=FRACTION[:CODE]. README: Faults",
    )
    clear = actions.add_parser("clear", help="clear a target's faults (all, or those named)")
    clear.add_argument("target")
    clear.add_argument("names", nargs="*", metavar="NAME")
    actions.add_parser("list", help="list every fault in force")


def _pairs(items: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise FaultError(f"'{item}' is not NAME=VALUE")
        pairs.append((name, value))
    return pairs


def _signed_headers(method: str, url: str, data: bytes | None, region: str) -> dict[str, str]:
    """SigV4 headers, as for EC2, so a server verifying signatures accepts the call."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    found = boto3.Session().get_credentials()
    credentials = found or Credentials("fakestor", "fakestor")  # loopback takes any
    signed = AWSRequest(
        method=method, url=url, data=data, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(credentials, "ec2", region).add_auth(signed)
    return dict(signed.headers.items())


def _admin(args: argparse.Namespace, method: str, query: str = "", body: Any = None) -> Any:
    endpoint = args.endpoint
    data = None if body is None else json.dumps(body).encode()
    url = endpoint.rstrip("/") + PATH + query
    headers = _signed_headers(method, url, data, args.region)
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as failure:
        text = failure.read().decode(errors="replace")
        try:
            message = json.loads(text).get("error") or failure.reason
        except (ValueError, AttributeError):
            # A refused signature: EC2's XML error, whose Message says why.
            found = re.search(r"<Message>(.*?)</Message>", text, re.S)
            message = found.group(1) if found else f"{failure.code} {failure.reason}"
        raise FaultError(str(message)) from None
    except (urllib.error.URLError, OSError) as failure:
        raise FaultError(f"cannot reach the server at {endpoint}: {failure}") from None


def _ec2(args: argparse.Namespace, call: Callable[[Any], Any]) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from fakestor.plugin.serve import ec2_client

    try:
        return call(ec2_client(args.endpoint, args.region))
    except ClientError as failure:
        error = failure.response.get("Error", {})
        raise FaultError(f"{error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as failure:
        raise FaultError(str(failure)) from None


def _is_volume(target: str) -> bool:
    return target.startswith("vol-")


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    """Do `fakestor fault ...`; raises FaultError for bad input or a refusal."""
    target = getattr(args, "target", "")
    if args.fault_command == "set":
        pairs = _pairs(args.faults)
        if _is_volume(target):
            for name, value in pairs:
                try:
                    faults.check_value(name, value)
                except KeyError:
                    raise FaultError(
                        f"'{name}' is not a volume fault; use one of {', '.join(faults.FORMS)}"
                    ) from None
                except ValueError:
                    raise FaultError(f"{name}={value}: use {name}={faults.FORMS[name]}") from None
            tags = [{"Key": faults.PREFIX + name, "Value": value} for name, value in pairs]
            _ec2(args, lambda ec2: ec2.create_tags(Resources=[target], Tags=tags))
        else:
            for name, value in pairs:
                try:
                    server_faults.parse(target, name, value)
                except ValueError as failure:
                    raise FaultError(str(failure)) from None
            for name, value in pairs:
                _admin(args, "PUT", body={"scope": target, "name": name, "value": value})
        for name, value in pairs:
            out(f"{target} {name}={value}")
    elif args.fault_command == "clear":
        if _is_volume(target):
            names = args.names or list(faults.FORMS)
            keys = [{"Key": faults.PREFIX + name} for name in names]
            _ec2(args, lambda ec2: ec2.delete_tags(Resources=[target], Tags=keys))
            out(f"{target}: cleared {', '.join(names)}")
        else:
            cleared = 0
            for name in args.names or [None]:
                query = "?" + urllib.parse.urlencode(
                    {"scope": target, **({"name": name} if name else {})}
                )
                cleared += int(_admin(args, "DELETE", query)["cleared"])
            out(f"{target}: cleared {cleared} fault(s)")
    else:
        listed = _admin(args, "GET")
        for item in listed["server"]:
            out(f"{item['scope']} {item['name']}={item['value']}")
        found = _ec2(
            args,
            lambda ec2: ec2.describe_tags(
                Filters=[{"Name": "key", "Values": [faults.PREFIX + "*"]}]
            )["Tags"],
        )
        for tag in found:
            out(f"{tag['ResourceId']} {tag['Key'].removeprefix(faults.PREFIX)}={tag['Value']}")
