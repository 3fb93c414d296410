"""EC2 actions on images: DescribeImages, RegisterImage, DeregisterImage."""

from __future__ import annotations

from typing import Any

from fakestor import errors
from fakestor.control import images
from fakestor.control.context import Ebs
from fakestor.control.images import Image
from fakestor.control.resources import to_wire_time
from fakestor.ec2 import views
from fakestor.ec2.actions.common import Params, Result, action, dry_run_of, filters_of
from fakestor.ec2.actions.instances import device_mappings_of


def _image(item: Image) -> dict[str, Any]:
    mappings: list[dict[str, Any]] = []
    for m in item.mappings:
        doc: dict[str, Any] = {"DeviceName": m.device_name}
        if m.ebs:
            volume = {
                "DeleteOnTermination": m.delete_on_termination is not False,
                "SnapshotId": m.snapshot_id,
                "VolumeSize": m.volume_size,
                "VolumeType": m.volume_type or "gp2",
                "Encrypted": bool(m.encrypted),
                "Iops": m.iops,
                "Throughput": m.throughput,
            }
            doc["Ebs"] = {key: value for key, value in volume.items() if value is not None}
        elif m.virtual_name:
            doc["VirtualName"] = m.virtual_name
        mappings.append(doc)
    return {
        "ImageId": item.id,
        "Name": item.name,
        "Description": item.description,
        "OwnerId": item.owner_id,
        "ImageOwnerAlias": item.owner_alias,
        "State": "available",
        "CreationDate": to_wire_time(item.creation_date),
        "Public": item.owner_alias == "amazon",
        "Architecture": "x86_64",
        "ImageType": "machine",
        "Hypervisor": "xen",
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "RootDeviceName": item.root_device_name,
        "RootDeviceType": images.root_device_type(item.root_device_name, item.mappings),
        "BlockDeviceMappings": mappings,
        "Tags": views.tag_list(item.tags),
    }


@action
def describe_images(ebs: Ebs, params: Params) -> Result:
    found = images.describe_images(
        ebs,
        image_ids=params.get("ImageIds", []),
        owners=params.get("Owners", []),
        filters=filters_of(params),
        dry_run=dry_run_of(params),
    )
    return {"Images": [_image(image) for image in found]}


@action
def register_image(ebs: Ebs, params: Params) -> Result:
    if params.get("ImageLocation"):
        raise errors.InvalidParameterCombination(
            "fakestor registers EBS-backed images only: give RootDeviceName and a "
            "BlockDeviceMapping with a snapshot, not ImageLocation."
        )
    root_device_name = params.get("RootDeviceName", images.ROOT_DEVICE)
    image = images.register_image(
        ebs,
        params["Name"],
        root_device_name,
        device_mappings_of(params.get("BlockDeviceMappings", [])),
        description=params.get("Description", ""),
        dry_run=dry_run_of(params),
    )
    return {"ImageId": image.id}


@action
def deregister_image(ebs: Ebs, params: Params) -> Result:
    images.deregister_image(ebs, params["ImageId"], dry_run=dry_run_of(params))
    return {}
