"""State survives the server: a clean stop, and a kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import ZONE, ServerFactory, fast_waiter, new_volume


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_everything_is_still_there_after_a_restart(start_server: ServerFactory, how: str) -> None:
    server = start_server()
    ec2 = server.client()
    volume_id = new_volume(
        ec2,
        5,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "keep"}]}],
    )
    ec2.attach_volume(VolumeId=volume_id, InstanceId=server.host_instance_id, Device="/dev/sdf")
    fast_waiter(ec2, "volume_in_use")(VolumeIds=[volume_id])
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id, Description="before restart")[
        "SnapshotId"
    ]
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    instance = ec2.run_instances(ImageId="ami-00000000000000001", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    ec2.enable_ebs_encryption_by_default()
    before_volumes = ec2.describe_volumes()["Volumes"]
    before_snapshots = ec2.describe_snapshots()["Snapshots"]
    host = server.host_instance_id

    if how == "stop":
        assert server.stop() == 0
    else:
        server.kill()
    server.start()
    ec2 = server.client()

    assert server.host_instance_id == host
    assert ec2.describe_volumes()["Volumes"] == before_volumes
    assert ec2.describe_snapshots()["Snapshots"] == before_snapshots
    assert (
        ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [volume_id]}])["Tags"][0][
            "Value"
        ]
        == "keep"
    )
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance])
    assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"] is True
    # And it goes on working.
    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)
    fast_waiter(ec2, "volume_available")(VolumeIds=[restored["VolumeId"]])


def test_sigint_stops_cleanly(start_server: ServerFactory) -> None:
    server = start_server()
    assert server.process is not None
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(timeout=20) == 0
    server.process = None
    assert "fakestor: stopped" in server.log()


def test_one_server_per_data_dir(start_server: ServerFactory) -> None:
    first = start_server()
    result = subprocess.run(
        [sys.executable, "-m", "fakestor", "server", "--backend", "metadata",
         "--listen", "127.0.0.1:0", "--data-dir", str(first.data_dir)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "another fakestor server is using" in result.stderr
    first.client().describe_volumes()  # the first one is unharmed
