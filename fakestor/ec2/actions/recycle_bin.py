"""EC2 actions on the Recycle Bin: List*InRecycleBin and Restore*FromRecycleBin for snapshots,
volumes and images."""

from __future__ import annotations

from fakestor.control import recycle_bin, recycle_bin_resources
from fakestor.control.context import Ebs
from fakestor.ec2.actions.common import Params, Result, action, check_paging, dry_run_of, page_of


@action
def list_snapshots_in_recycle_bin(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("ListSnapshotsInRecycleBin", params, 5, 1000)
    found = recycle_bin.list_snapshots_in_recycle_bin(
        ebs, snapshot_ids=params.get("SnapshotIds", []), dry_run=dry_run_of(params)
    )
    page, token = page_of(
        "ListSnapshotsInRecycleBin", params, page_size, found, lambda item: item.snapshot.id
    )
    return {
        "Snapshots": [
            {
                "SnapshotId": item.snapshot.id,
                "RecycleBinEnterTime": item.enter_time,
                "RecycleBinExitTime": item.exit_time,
                "Description": item.snapshot.description,
                "VolumeId": item.snapshot.volume_id,
            }
            for item in page
        ],
        "NextToken": token,
    }


@action
def restore_snapshot_from_recycle_bin(ebs: Ebs, params: Params) -> Result:
    snapshot = recycle_bin.restore_snapshot_from_recycle_bin(
        ebs, params["SnapshotId"], dry_run=dry_run_of(params)
    )
    return {
        "SnapshotId": snapshot.id,
        "Description": snapshot.description,
        "Encrypted": snapshot.encrypted,
        "OwnerId": snapshot.owner_id,
        "Progress": f"{snapshot.progress}%",
        "StartTime": snapshot.start_time,
        "State": snapshot.state,
        "VolumeId": snapshot.volume_id,
        "VolumeSize": snapshot.volume_size,
    }


@action
def list_volumes_in_recycle_bin(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("ListVolumesInRecycleBin", params, 5, 500)
    found = recycle_bin_resources.list_volumes_in_recycle_bin(
        ebs, volume_ids=params.get("VolumeIds", []), dry_run=dry_run_of(params)
    )
    page, token = page_of(
        "ListVolumesInRecycleBin", params, page_size, found, lambda item: item[0].id
    )
    return {
        "Volumes": [
            {
                "VolumeId": volume.id,
                "VolumeType": volume.volume_type,
                # AWS's docs show no State for a volume in the bin; the state it had (and
                # returns to) is fakestor's choice.
                "State": volume.state,
                "Size": volume.size,
                "Iops": volume.iops,
                "Throughput": volume.throughput,
                "AvailabilityZone": volume.zone,
                "AvailabilityZoneId": ebs.region.zone_id(volume.zone),
                "SourceVolumeId": volume.source_volume_id,
                "SnapshotId": volume.snapshot_id,
                "CreateTime": volume.create_time,
                "RecycleBinEnterTime": times.enter_time,
                "RecycleBinExitTime": times.exit_time,
            }
            for volume, times in page
        ],
        "NextToken": token,
    }


@action
def restore_volume_from_recycle_bin(ebs: Ebs, params: Params) -> Result:
    recycle_bin_resources.restore_volume_from_recycle_bin(
        ebs, params["VolumeId"], dry_run=dry_run_of(params)
    )
    return {"Return": True}


@action
def list_images_in_recycle_bin(ebs: Ebs, params: Params) -> Result:
    page_size = check_paging("ListImagesInRecycleBin", params, 1, 1000)
    found = recycle_bin_resources.list_images_in_recycle_bin(
        ebs, image_ids=params.get("ImageIds", []), dry_run=dry_run_of(params)
    )
    page, token = page_of("ListImagesInRecycleBin", params, page_size, found, lambda i: i[0].id)
    return {
        "Images": [
            {
                "ImageId": image.id,
                "Name": image.name,
                "Description": image.description,
                "RecycleBinEnterTime": times.enter_time,
                "RecycleBinExitTime": times.exit_time,
            }
            for image, times in page
        ],
        "NextToken": token,
    }


@action
def restore_image_from_recycle_bin(ebs: Ebs, params: Params) -> Result:
    recycle_bin_resources.restore_image_from_recycle_bin(
        ebs, params["ImageId"], dry_run=dry_run_of(params)
    )
    return {"Return": True}
