"""The wire layer against botocore's own client-side serializer and parser.

What boto3 sends must parse back to what it was given, and what fakestor writes
must parse (with botocore's EC2 response parser) to what fakestor meant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from fakestor import errors
from fakestor.ec2 import wire
from fakestor.ec2.actions import ACTIONS


def _client_params(action: str, params: dict[str, Any]) -> dict[str, str]:
    operation = wire.operation_model(action)
    request = create_serializer("ec2").serialize_to_request(params, operation)
    body = request["body"]
    return {key: str(value) for key, value in body.items()}


def _client_parse(action: str, body: bytes, status: int = 200) -> dict[str, Any]:
    operation = wire.operation_model(action)
    response = {"body": body, "headers": {}, "status_code": status}
    parsed: dict[str, Any] = create_parser("ec2").parse(response, operation.output_shape)
    return parsed


@pytest.mark.parametrize(
    ("action", "params"),
    [
        (
            "CreateVolume",
            {
                "AvailabilityZone": "us-east-1a",
                "Size": 8,
                "VolumeType": "gp3",
                "Iops": 4000,
                "Encrypted": True,
                "TagSpecifications": [
                    {
                        "ResourceType": "volume",
                        "Tags": [{"Key": "Name", "Value": "data"}, {"Key": "team", "Value": ""}],
                    }
                ],
                "DryRun": False,
            },
        ),
        (
            "DescribeVolumes",
            {
                "Filters": [
                    {"Name": "tag:Name", "Values": ["a*", "b?"]},
                    {"Name": "status", "Values": ["available"]},
                ],
                "MaxResults": 10,
                "NextToken": "abc",
            },
        ),
        (
            "ModifySnapshotAttribute",
            {
                "SnapshotId": "snap-0123456789abcdef0",
                "Attribute": "createVolumePermission",
                "CreateVolumePermission": {"Add": [{"UserId": "111122223333"}, {"Group": "all"}]},
            },
        ),
        (
            "CreateSnapshots",
            {
                "InstanceSpecification": {
                    "InstanceId": "i-0123456789abcdef0",
                    "ExcludeDataVolumeIds": ["vol-0123456789abcdef0"],
                },
                "CopyTagsFromSource": "volume",
            },
        ),
    ],
)
def test_requests_boto3_sends_parse_back_to_their_parameters(
    action: str, params: dict[str, Any]
) -> None:
    parsed = wire.parse_request(wire.operation_model(action), _client_params(action, params))
    assert parsed == params


def test_responses_parse_with_botocore_to_what_was_meant() -> None:
    created = datetime(2026, 11, 25, 12, 30, 1, 123000, tzinfo=UTC)
    result = {
        "Volumes": [
            {
                "VolumeId": "vol-0123456789abcdef0",
                "Size": 8,
                "State": "in-use",
                "CreateTime": created,
                "Encrypted": False,
                "Attachments": [
                    {
                        "VolumeId": "vol-0123456789abcdef0",
                        "InstanceId": "i-0123456789abcdef0",
                        "Device": "/dev/sdf",
                        "State": "attached",
                        "AttachTime": created,
                        "DeleteOnTermination": False,
                    }
                ],
                "Tags": [{"Key": "Name", "Value": "<&>"}],
            }
        ],
        "NextToken": "tok",
    }
    operation = wire.operation_model("DescribeVolumes")
    body = wire.serialize_response(operation, result, "req-1")
    parsed = _client_parse("DescribeVolumes", body)
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"
    del parsed["ResponseMetadata"]
    assert parsed == result


def test_error_document_parses_as_ec2_error() -> None:
    body = wire.serialize_error("InvalidVolume.NotFound", "The volume 'vol-1' does not exist.", "r")
    parsed = _client_parse("DescribeVolumes", body, status=400)
    assert parsed["Error"] == {
        "Code": "InvalidVolume.NotFound",
        "Message": "The volume 'vol-1' does not exist.",
    }


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"AvailabilityZone": "a", "Size": "eight"}, errors.InvalidParameterValue, "Size"),
        ({"AvailabilityZone": "a", "Encrypted": "yes"}, errors.InvalidParameterValue, "true"),
        ({"AvailabilityZone": "a", "Colour": "red"}, errors.UnknownParameter, "Colour"),
        (
            {"AvailabilityZone": "a", "TagSpecification.x.ResourceType": "volume"},
            errors.UnknownParameter,
            "TagSpecification.x",
        ),
        (
            {"AvailabilityZone": "a", "TagSpecification": "volume"},
            errors.InvalidParameterValue,
            "list",
        ),
    ],
)
def test_malformed_parameters_get_ec2_errors(
    params: dict[str, str], error: type[errors.Ec2Error], message: str
) -> None:
    with pytest.raises(error, match=message):
        wire.parse_request(wire.operation_model("CreateVolume"), params)


def test_missing_required_parameter_names_it() -> None:
    with pytest.raises(errors.MissingParameter, match="VolumeId"):
        wire.parse_request(wire.operation_model("DeleteVolume"), {})


def test_unknown_action_is_invalid_action() -> None:
    with pytest.raises(errors.InvalidAction):
        wire.operation_model("LaunchRockets")


def test_every_action_is_an_ec2_operation() -> None:
    operations = set(wire.service_model().operation_names)
    assert set(ACTIONS) <= operations, set(ACTIONS) - operations
