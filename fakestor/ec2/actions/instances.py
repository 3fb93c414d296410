"""EC2 actions on instances: run, describe, stop, start, reboot, terminate, attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fakestor import errors
from fakestor.control import (
    instances,
)
from fakestor.control.context import Ebs
from fakestor.control.images import BUILTIN_IMAGE
from fakestor.control.requests import DeviceMapping, InstanceAttributeChange, LaunchRequest
from fakestor.control.resources import Instance
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


def device_mappings_of(items: Sequence[Params]) -> list[DeviceMapping]:
    """BlockDeviceMapping.N of RunInstances and RegisterImage."""
    mappings = []
    for item in items:
        if "DeviceName" not in item:
            raise errors.MissingParameter("BlockDeviceMapping.N.DeviceName")
        volume = item.get("Ebs")
        if volume is not None and "NoDevice" in item:
            raise errors.InvalidBlockDeviceMapping(
                f"{item['DeviceName']}: give either Ebs or NoDevice, not both."
            )
        mappings.append(
            DeviceMapping(
                device_name=item["DeviceName"],
                virtual_name=item.get("VirtualName"),
                no_device="NoDevice" in item,
                ebs=volume is not None,
                volume_size=(volume or {}).get("VolumeSize"),
                volume_type=(volume or {}).get("VolumeType"),
                iops=(volume or {}).get("Iops"),
                throughput=(volume or {}).get("Throughput"),
                snapshot_id=(volume or {}).get("SnapshotId"),
                encrypted=(volume or {}).get("Encrypted"),
                kms_key_id=(volume or {}).get("KmsKeyId"),
                delete_on_termination=(volume or {}).get("DeleteOnTermination"),
                initialization_rate=(volume or {}).get("VolumeInitializationRate"),
            )
        )
    return mappings


@action
def run_instances(ebs: Ebs, params: Params) -> Result:
    request = LaunchRequest(
        image_id=params.get("ImageId", BUILTIN_IMAGE.id),
        min_count=params["MinCount"],
        max_count=params["MaxCount"],
        instance_type=params.get("InstanceType"),
        zone=params.get("Placement", {}).get("AvailabilityZone"),
        tag_specs=tag_specs_of(params),
        mappings=device_mappings_of(params.get("BlockDeviceMappings", [])),
        disable_api_termination=bool(params.get("DisableApiTermination", False)),
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


def _state_changes(changes: Sequence[tuple[Instance, str]]) -> list[Params]:
    return [
        {
            "InstanceId": instance.id,
            "CurrentState": views.instance_state(instance.state),
            "PreviousState": views.instance_state(previous),
        }
        for instance, previous in changes
    ]


@action
def terminate_instances(ebs: Ebs, params: Params) -> Result:
    changes = instances.terminate_instances(ebs, params["InstanceIds"], dry_run=dry_run_of(params))
    return {"TerminatingInstances": _state_changes(changes)}


@action
def stop_instances(ebs: Ebs, params: Params) -> Result:
    changes = instances.stop_instances(ebs, params["InstanceIds"], dry_run=dry_run_of(params))
    return {"StoppingInstances": _state_changes(changes)}


@action
def start_instances(ebs: Ebs, params: Params) -> Result:
    changes = instances.start_instances(ebs, params["InstanceIds"], dry_run=dry_run_of(params))
    return {"StartingInstances": _state_changes(changes)}


@action
def reboot_instances(ebs: Ebs, params: Params) -> Result:
    instances.reboot_instances(ebs, params["InstanceIds"], dry_run=dry_run_of(params))
    return {}


@action
def modify_instance_attribute(ebs: Ebs, params: Params) -> Result:
    delete_on_termination = {}
    for item in params.get("BlockDeviceMappings", []):
        if "DeviceName" not in item:
            raise errors.MissingParameter("BlockDeviceMapping.N.DeviceName")
        value = item.get("Ebs", {}).get("DeleteOnTermination")
        if value is not None:
            delete_on_termination[item["DeviceName"]] = bool(value)
    attribute, value = params.get("Attribute"), params.get("Value")
    instance_type = params.get("InstanceType", {}).get("Value")
    disable_termination = params.get("DisableApiTermination", {}).get("Value")
    if attribute == "instanceType" and value is not None:
        instance_type = value
    elif attribute == "disableApiTermination" and value is not None:
        disable_termination = value.lower() == "true"
    change = InstanceAttributeChange(delete_on_termination, instance_type, disable_termination)
    instances.modify_instance_attribute(
        ebs, params["InstanceId"], change, dry_run=dry_run_of(params)
    )
    return {}


@action
def describe_instance_attribute(ebs: Ebs, params: Params) -> Result:
    attribute = params["Attribute"]
    instance = instances.describe_instance_attribute(
        ebs, params["InstanceId"], attribute, dry_run=dry_run_of(params)
    )
    result: Result = {"InstanceId": instance.id}
    if attribute == "blockDeviceMapping":
        result["BlockDeviceMappings"] = views.instance_block_devices(instance)
    elif attribute == "instanceType":
        result["InstanceType"] = {"Value": instance.instance_type}
    elif attribute == "disableApiTermination":
        result["DisableApiTermination"] = {"Value": instance.disable_api_termination}
    else:
        result["RootDeviceName"] = {"Value": instance.root_device_name}
    return result
