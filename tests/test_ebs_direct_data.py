"""The EBS direct APIs on real data (loopdev and fuse, root only): snapshots written block by
block restore byte for byte, volumes' snapshots read back block by block, changed blocks
between two snapshots of one volume, and paging."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ServerFactory, fast_waiter, new_volume
from tests.test_api_ebs_direct import BLOCK, checksum, ebs_client, put
from tests.test_loopdev import BACKENDS, Host, _read_raw, _write_raw, machine

pytestmark = pytest.mark.privileged


@pytest.fixture(params=BACKENDS)
def host(
    request: pytest.FixtureRequest, start_server: ServerFactory, tmp_path: Path
) -> Iterator[Host]:
    with machine(start_server, tmp_path, request.param) as running:
        yield running


def blocks_of(ebs: Any, snapshot_id: str, **paging: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        page = ebs.list_snapshot_blocks(
            SnapshotId=snapshot_id, **paging, **({"NextToken": token} if token else {})
        )
        found += page["Blocks"]
        token = page.get("NextToken")
        if not token:
            return found


def read_block(ebs: Any, snapshot_id: str, block: dict[str, Any]) -> bytes:
    answer = ebs.get_snapshot_block(
        SnapshotId=snapshot_id, BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"]
    )
    data: bytes = answer["BlockData"].read()
    assert answer["DataLength"] == BLOCK == len(data)
    assert answer["Checksum"] == checksum(data) and answer["ChecksumAlgorithm"] == "SHA256"
    return data


def snapshot_of(host: Host, volume_id: str) -> str:
    snapshot_id = str(host.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"])
    fast_waiter(host.ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def test_written_snapshot_restores_byte_for_byte(host: Host) -> None:
    ebs = ebs_client(host.server.url)
    snapshot_id = ebs.start_snapshot(VolumeSize=1, Description="written")["SnapshotId"]
    written = {index: os.urandom(BLOCK) for index in (0, 1, 7, 1000, 2047)}
    for index, data in written.items():
        put(ebs, snapshot_id, index, data)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(written))
    fast_waiter(host.ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    assert [b["BlockIndex"] for b in blocks_of(ebs, snapshot_id)] == sorted(written)

    volume_id = new_volume(host.ec2, 1, SnapshotId=snapshot_id)
    device = host.attach(volume_id)
    for index, data in written.items():
        assert _read_raw(device, index * BLOCK, BLOCK) == data, f"block {index}"
    assert _read_raw(device, 2 * BLOCK, BLOCK) == bytes(BLOCK)  # never written: zeros

    # A child of it changes one block; the rest comes from the parent.
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=snapshot_id)["SnapshotId"]
    new_data = os.urandom(BLOCK)
    put(ebs, child, 7, new_data)
    put(ebs, child, 1000, written[1000])  # the parent's bytes again: not a change
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2)
    fast_waiter(host.ec2, "snapshot_completed")(SnapshotIds=[child])
    changed = ebs.list_changed_blocks(FirstSnapshotId=snapshot_id, SecondSnapshotId=child)
    assert [b["BlockIndex"] for b in changed["ChangedBlocks"]] == [7]
    restored = new_volume(host.ec2, 1, SnapshotId=child)
    child_device = host.attach(restored, "/dev/sdg")
    assert _read_raw(child_device, 7 * BLOCK, BLOCK) == new_data
    assert _read_raw(child_device, 1000 * BLOCK, BLOCK) == written[1000]
    host.detach(restored)
    host.detach(volume_id)


def test_volume_snapshots_read_back_and_changed_blocks(host: Host) -> None:
    ebs = ebs_client(host.server.url)
    volume_id = new_volume(host.ec2, 1)
    device = host.attach(volume_id)
    data = {index: os.urandom(BLOCK) for index in (0, 5, 7, 100)}
    for index, block in data.items():
        _write_raw(device, index * BLOCK, block)
    first = snapshot_of(host, volume_id)

    blocks = blocks_of(ebs, first)
    assert [b["BlockIndex"] for b in blocks] == sorted(data)
    for block in blocks:
        assert read_block(ebs, first, block) == data[block["BlockIndex"]]
    wrong = ebs.list_snapshot_blocks(SnapshotId=first)["Blocks"]
    with pytest.raises(ebs.exceptions.ValidationException) as refused:
        ebs.get_snapshot_block(SnapshotId=first, BlockIndex=5, BlockToken=wrong[0]["BlockToken"])
    assert refused.value.response["Reason"] == "INVALID_BLOCK_TOKEN"

    for index in (5, 200, 300):
        _write_raw(device, index * BLOCK, os.urandom(BLOCK))
    for index in (7, 100):  # the same bytes again: not a change
        _write_raw(device, index * BLOCK, data[index])
    second = snapshot_of(host, volume_id)
    changed = ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)
    entries = changed["ChangedBlocks"]
    assert [entry["BlockIndex"] for entry in entries] == [5, 200, 300]
    assert "FirstBlockToken" in entries[0] and "FirstBlockToken" not in entries[1]
    second_block = {"BlockIndex": 200, "BlockToken": entries[1]["SecondBlockToken"]}
    assert read_block(ebs, second, second_block) == _read_raw(device, 200 * BLOCK, BLOCK)
    host.detach(volume_id)


def test_paging_over_more_than_a_hundred_blocks(host: Host) -> None:
    ebs = ebs_client(host.server.url)
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    block = os.urandom(BLOCK)
    for index in range(150):
        put(ebs, snapshot_id, index * 2, block)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=150)
    fast_waiter(host.ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    page = ebs.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100)
    assert len(page["Blocks"]) == 100 and page["NextToken"]
    rest = ebs.list_snapshot_blocks(
        SnapshotId=snapshot_id, MaxResults=100, NextToken=page["NextToken"]
    )
    assert "NextToken" not in rest
    every = [b["BlockIndex"] for b in page["Blocks"] + rest["Blocks"]]
    assert every == [index * 2 for index in range(150)]
    assert [b["BlockIndex"] for b in blocks_of(ebs, snapshot_id, StartingBlockIndex=250)] == [
        index * 2 for index in range(125, 150)
    ]
    if host.backend != "loopdev":
        return  # a token's lifetime is the control plane's, not the backend's: one 11 s wait
    # The token lasts EBS's 60 minutes divided by --time-scale (3600 here), at least 10 s.
    time.sleep(11)
    with pytest.raises(ClientError) as expired:
        ebs.list_snapshot_blocks(
            SnapshotId=snapshot_id, MaxResults=100, NextToken=page["NextToken"]
        )
    assert expired.value.response["Reason"] == "INVALID_PAGE_TOKEN"
    assert "expired" in expired.value.response["Error"]["Message"]


def test_a_pending_written_snapshot_survives_a_restart(host: Host) -> None:
    ebs = ebs_client(host.server.url)
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    before, after = os.urandom(BLOCK), os.urandom(BLOCK)
    put(ebs, snapshot_id, 3, before)
    assert host.server.stop() == 0
    host.server.start()
    ebs = ebs_client(host.server.url)
    host.ec2 = host.server.client()
    put(ebs, snapshot_id, 4, after)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=2)
    fast_waiter(host.ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    blocks = blocks_of(ebs, snapshot_id)
    assert [read_block(ebs, snapshot_id, block) for block in blocks] == [before, after]
