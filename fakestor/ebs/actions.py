"""The EBS direct API actions: each turns parsed input (botocore member names) into a
control-plane call and its result into the output shape's members."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fakestor.control import Ebs, direct_writes, kms_keys
from fakestor.control import direct_snapshots as direct
from fakestor.control.direct_snapshots import BLOCK_SIZE, BlockPage

Params = Mapping[str, Any]
Action = Callable[[Ebs, Params], dict[str, Any]]


def _paging(params: Params) -> dict[str, Any]:
    return {
        "max_results": params.get("MaxResults"),
        "next_token": params.get("NextToken"),
        "starting_block_index": params.get("StartingBlockIndex"),
    }


def _listing(page: BlockPage) -> dict[str, Any]:
    return {
        "ExpiryTime": page.expiry_time,
        "VolumeSize": page.volume_size,
        "BlockSize": BLOCK_SIZE,
        "NextToken": page.next_token,
    }


def list_snapshot_blocks(ebs: Ebs, params: Params) -> dict[str, Any]:
    page = direct.list_snapshot_blocks(ebs, params["SnapshotId"], **_paging(params))
    blocks = [{"BlockIndex": index, "BlockToken": token} for index, token, _ in page.blocks]
    return {"Blocks": blocks, **_listing(page)}


def list_changed_blocks(ebs: Ebs, params: Params) -> dict[str, Any]:
    page = direct.list_changed_blocks(
        ebs,
        params["SecondSnapshotId"],
        first_snapshot_id=params.get("FirstSnapshotId"),
        **_paging(params),
    )
    changed = [
        {"BlockIndex": index, "FirstBlockToken": first, "SecondBlockToken": second}
        for index, first, second in page.blocks
    ]
    return {"ChangedBlocks": changed, **_listing(page)}


def get_snapshot_block(ebs: Ebs, params: Params) -> dict[str, Any]:
    block = direct.get_snapshot_block(
        ebs, params["SnapshotId"], params["BlockIndex"], params["BlockToken"]
    )
    return {
        "BlockData": block.data,
        "DataLength": len(block.data),
        "Checksum": block.checksum,
        "ChecksumAlgorithm": "SHA256",
    }


def start_snapshot(ebs: Ebs, params: Params) -> dict[str, Any]:
    tags = params.get("Tags")
    started = direct_writes.start_snapshot(
        ebs,
        direct_writes.StartSnapshotRequest(
            volume_size=params["VolumeSize"],
            parent_snapshot_id=params.get("ParentSnapshotId"),
            tags={tag.get("Key", ""): tag.get("Value", "") for tag in tags} if tags else None,
            description=params.get("Description"),
            client_token=params.get("ClientToken"),
            encrypted=params.get("Encrypted"),
            kms_key_arn=params.get("KmsKeyArn"),
            timeout_minutes=params.get("Timeout"),
        ),
    )
    snapshot = started.snapshot
    return {
        "Description": snapshot.description or None,
        "SnapshotId": snapshot.id,
        "OwnerId": snapshot.owner_id,
        "Status": str(snapshot.state),
        "StartTime": snapshot.start_time,
        "VolumeSize": snapshot.volume_size,
        "BlockSize": BLOCK_SIZE,
        "Tags": [{"Key": k, "Value": v} for k, v in snapshot.tags.items()] or None,
        "ParentSnapshotId": started.parent_snapshot_id,
        "KmsKeyArn": started.kms_key_arn,
        "SseType": _sse_type(ebs, started),
    }


def _sse_type(ebs: Ebs, started: direct_writes.StartedSnapshot) -> str:
    if not started.snapshot.encrypted:
        return "none"
    aws_managed = started.kms_key_arn == kms_keys.aws_ebs_key(ebs).arn
    return "sse-ebs" if aws_managed else "sse-kms"


def put_snapshot_block(ebs: Ebs, params: Params) -> dict[str, Any]:
    checksum = direct_writes.put_snapshot_block(
        ebs,
        params["SnapshotId"],
        params["BlockIndex"],
        params["BlockData"],
        data_length=params["DataLength"],
        checksum=params["Checksum"],
        checksum_algorithm=params["ChecksumAlgorithm"],
        progress=params.get("Progress"),
    )
    return {"Checksum": checksum, "ChecksumAlgorithm": "SHA256"}


def complete_snapshot(ebs: Ebs, params: Params) -> dict[str, Any]:
    status = direct_writes.complete_snapshot(
        ebs,
        params["SnapshotId"],
        params["ChangedBlocksCount"],
        checksum=params.get("Checksum"),
        checksum_algorithm=params.get("ChecksumAlgorithm"),
        aggregation_method=params.get("ChecksumAggregationMethod"),
    )
    return {"Status": status}


ACTIONS: dict[str, Action] = {
    "ListSnapshotBlocks": list_snapshot_blocks,
    "ListChangedBlocks": list_changed_blocks,
    "GetSnapshotBlock": get_snapshot_block,
    "StartSnapshot": start_snapshot,
    "PutSnapshotBlock": put_snapshot_block,
    "CompleteSnapshot": complete_snapshot,
}
