"""EC2 actions on instances: RunInstances, DescribeInstances, TerminateInstances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fakestor import errors
from fakestor.control import (
    instances,
)
from fakestor.control.context import Ebs
from fakestor.control.requests import (
    LaunchRequest,
)
from fakestor.ec2 import views
from fakestor.ec2.actions.common import (
    Params,
    Result,
    action,
    check_paging,
    client_token_of,
    dry_run_of,
    filters_of,
    page_of,
    tag_specs_of,
)


def _reservation(ebs: Ebs, members: Sequence[Any], reservation_id: str) -> Result:
    return {
        "ReservationId": reservation_id,
        "OwnerId": ebs.region.account_id,
        "Groups": [],
        "Instances": [views.instance(i, ebs) for i in members],
    }


@action
def run_instances(ebs: Ebs, params: Params) -> Result:
    if params.get("BlockDeviceMappings"):
        raise errors.InvalidParameterCombination(
            "fakestor does not create volumes at launch: launch without BlockDeviceMappings, "
            "then CreateVolume and AttachVolume."
        )
    request = LaunchRequest(
        image_id=params.get("ImageId", "ami-00000000000000000"),
        min_count=params["MinCount"],
        max_count=params["MaxCount"],
        instance_type=params.get("InstanceType"),
        zone=params.get("Placement", {}).get("AvailabilityZone"),
        tag_specs=tag_specs_of(params),
    )
    launched = instances.run_instances(
        ebs, request, client_token=client_token_of(params), dry_run=dry_run_of(params)
    )
    return _reservation(ebs, launched, launched[0].reservation_id)


@action
def describe_instances(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("DescribeInstances", params, 5, 1000, "InstanceIds")
    found = instances.describe_instances(
        ebs,
        instance_ids=params.get("InstanceIds", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    page, token = page_of("DescribeInstances", params, page_size, found, lambda i: i.id)
    reservations: dict[str, list[Any]] = {}
    for instance in page:
        reservations.setdefault(instance.reservation_id, []).append(instance)
    return {
        "Reservations": [
            _reservation(ebs, sorted(members, key=lambda i: i.launch_index), reservation_id)
            for reservation_id, members in reservations.items()
        ],
        "NextToken": token,
    }


@action
def terminate_instances(ebs: Ebs, params: Params) -> Result:
    changes = instances.terminate_instances(ebs, params["InstanceIds"], dry_run=dry_run_of(params))
    return {
        "TerminatingInstances": [
            {
                "InstanceId": instance.id,
                "CurrentState": views.instance_state(instance.state),
                "PreviousState": views.instance_state(previous),
            }
            for instance, previous in changes
        ]
    }
