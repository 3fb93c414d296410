"""CopyVolumes and volume initialization through boto3 on the metadata backend: the API's
rules, initialization progress observed from `initializing` to `completed`, fast snapshot
restore's instant initialization, archiving disabling fast snapshot restore, and a pass
resumed after a crash. (The data they move is shown in test_volume_copies_data.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import OTHER_ZONE, ZONE, ServerFactory, fast_waiter, new_volume, wait_for
from tests.test_api_kms import kms_client, new_key
from tests.test_api_snapshot_lifecycle import DAY_A_SECOND, _fsr, _tier
from tests.test_cli import aws
from tests.test_transitions import _states

# The metadata backend initializes a volume's whole size: at --time-scale 20, 4 GiB at
# 100 MiB/s (41 s on EC2) takes about 2 s here.
SLOW_ENOUGH = ("--time-scale", "20")


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def _status(ec2: Any, volume_id: str) -> dict[str, Any]:
    item: dict[str, Any] = ec2.describe_volume_status(VolumeIds=[volume_id])["VolumeStatuses"][0]
    return item


def _initialization(ec2: Any, volume_id: str) -> tuple[str | None, dict[str, Any] | None]:
    """The volume's initialization-state detail and its InitializationStatusDetails."""
    item = _status(ec2, volume_id)
    state = {d["Name"]: d["Status"] for d in item["VolumeStatus"]["Details"]}
    return state.get("initialization-state"), item.get("InitializationStatusDetails")


def _details(ec2: Any, volume_id: str) -> dict[str, Any]:
    details = _initialization(ec2, volume_id)[1]
    assert details is not None, f"{volume_id} reports no initialization"
    return details


def _snapshot(ec2: Any, size: int = 1, **extra: Any) -> str:
    volume_id = new_volume(ec2, size, **extra)
    snapshot_id = str(ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"])
    fast_waiter(ec2, "snapshot_completed")(SnapshotIds=[snapshot_id])
    return snapshot_id


def test_copy_volume_rules_tags_and_idempotency(ec2: Any) -> None:
    source = new_volume(ec2, 8, VolumeType="gp3")
    copy = ec2.copy_volumes(
        SourceVolumeId=source,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "copy"}]}],
    )["Volumes"]
    assert len(copy) == 1
    volume = copy[0]
    assert volume["State"] == "creating" and volume["SourceVolumeId"] == source
    assert volume["Size"] == 8 and volume["AvailabilityZone"] == ZONE
    assert volume["VolumeType"] == "gp2"  # the model: "defaults to gp2"
    assert volume["Tags"] == [{"Key": "Name", "Value": "copy"}]
    fast_waiter(ec2, "volume_available")(VolumeIds=[volume["VolumeId"]])
    described = ec2.describe_volumes(VolumeIds=[volume["VolumeId"]])["Volumes"][0]
    assert described["SourceVolumeId"] == source and not described["FastRestored"]
    wait_for(lambda: _initialization(ec2, volume["VolumeId"])[0] == "completed")
    assert _details(ec2, volume["VolumeId"]) == {
        "InitializationType": "volume-copy",
        "Progress": 100,
    }

    bigger = ec2.copy_volumes(SourceVolumeId=source, Size=20, VolumeType="gp3", Iops=4000)
    assert (bigger["Volumes"][0]["Size"], bigger["Volumes"][0]["Iops"]) == (20, 4000)

    refusals = [
        ({"SourceVolumeId": source, "Size": 4}, "InvalidParameterValue"),
        ({"SourceVolumeId": source, "VolumeType": "gp2", "Throughput": 200}, None),
        ({"SourceVolumeId": "vol-00000000000000000"}, "InvalidVolume.NotFound"),
        ({"SourceVolumeId": "vol-nope"}, "InvalidVolumeID.Malformed"),
        ({"SourceVolumeId": source, "DryRun": True}, "DryRunOperation"),
    ]
    for params, code in refusals:
        with pytest.raises(ClientError) as refused:
            ec2.copy_volumes(**params)
        if code is not None:
            assert _code(refused) == code, params

    first = ec2.copy_volumes(SourceVolumeId=source, ClientToken="copy-1")["Volumes"][0]
    again = ec2.copy_volumes(SourceVolumeId=source, ClientToken="copy-1")["Volumes"][0]
    assert again["VolumeId"] == first["VolumeId"]
    with pytest.raises(ClientError) as refused:
        ec2.copy_volumes(SourceVolumeId=source, ClientToken="copy-1", Size=30)
    assert _code(refused) == "IdempotentParameterMismatch"


def test_copy_of_encrypted_volume_is_encrypted_with_its_key(server: Any, ec2: Any) -> None:
    kms = kms_client(server.url)
    key = new_key(kms)
    source = new_volume(ec2, 1, Encrypted=True, KmsKeyId=key["KeyId"])
    copy = ec2.copy_volumes(SourceVolumeId=source, Encrypted=False)["Volumes"][0]
    assert copy["Encrypted"] and copy["KmsKeyId"] == key["Arn"]
    other = new_key(kms)
    rekeyed = ec2.copy_volumes(SourceVolumeId=source, KmsKeyId=other["KeyId"])["Volumes"][0]
    assert rekeyed["KmsKeyId"] == other["Arn"]  # named by id, recorded as its ARN
    plain = new_volume(ec2, 1)
    encrypted = ec2.copy_volumes(SourceVolumeId=plain, Encrypted=True)["Volumes"][0]
    assert encrypted["Encrypted"] and encrypted["KmsKeyId"]
    with pytest.raises(ClientError) as refused:
        ec2.copy_volumes(SourceVolumeId=plain, KmsKeyId=key["KeyId"])
    assert _code(refused) == "InvalidParameterDependency"
    # A key EBS cannot use fails the copy after the request, as it fails CreateVolume.
    kms.disable_key(KeyId=other["KeyId"])
    doomed = ec2.copy_volumes(SourceVolumeId=source, KmsKeyId=other["KeyId"])["Volumes"][0]
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[doomed["VolumeId"]])


def test_copying_a_creating_volume_is_refused(start_server: ServerFactory) -> None:
    slow = start_server("--latency", "1")
    ec2 = slow.client()
    creating = ec2.create_volume(AvailabilityZone=ZONE, Size=1)["VolumeId"]
    with pytest.raises(ClientError) as refused:
        ec2.copy_volumes(SourceVolumeId=creating)
    assert _code(refused) == "IncorrectState"


def test_initialization_rate_rules(ec2: Any) -> None:
    snapshot_id = _snapshot(ec2)
    refusals = [
        ({"Size": 1, "VolumeInitializationRate": 100}, "InvalidParameterCombination"),
        ({"SnapshotId": snapshot_id, "VolumeInitializationRate": 99}, "InvalidParameterValue"),
        ({"SnapshotId": snapshot_id, "VolumeInitializationRate": 301}, "InvalidParameterValue"),
    ]
    for params, code in refusals:
        with pytest.raises(ClientError) as refused:
            ec2.create_volume(AvailabilityZone=ZONE, **params)
        assert _code(refused) == code, params
    empty = new_volume(ec2, 1)
    assert _initialization(ec2, empty) == (None, None)  # empty volumes need none
    assert "VolumeInitializationRate" not in ec2.describe_volumes(VolumeIds=[empty])["Volumes"][0]


def test_provisioned_rate_initializes_with_growing_progress(start_server: ServerFactory) -> None:
    slow = start_server(*SLOW_ENOUGH)
    ec2 = slow.client()
    snapshot_id = _snapshot(ec2, 4)
    volume_id = new_volume(ec2, 4, SnapshotId=snapshot_id, VolumeInitializationRate=100)
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["VolumeInitializationRate"] == 100 and not volume["FastRestored"]
    progress: list[int] = []
    estimates: list[int] = []

    def sample() -> str:
        state, details = _initialization(ec2, volume_id)
        assert details is not None and details["InitializationType"] == "provisioned-rate"
        progress.append(details["Progress"])
        estimates.append(details["EstimatedTimeToCompleteInSeconds"])
        return str(state)

    assert _states(sample, "completed") == ["initializing", "completed"]
    assert progress == sorted(progress) and progress[-1] == 100
    assert len({p for p in progress if 0 < p < 100}) >= 2, progress  # seen moving
    assert max(estimates) > 0 and estimates[-1] == 0
    ok = ec2.describe_volume_status(
        Filters=[{"Name": "volume-status.details-name", "Values": ["initialization-state"]}]
    )["VolumeStatuses"]
    assert volume_id in {item["VolumeId"] for item in ok}


def test_default_initialization_reports_no_estimate(start_server: ServerFactory) -> None:
    slow = start_server(*SLOW_ENOUGH)
    ec2 = slow.client()
    snapshot_id = _snapshot(ec2, 2)
    volume_id = new_volume(ec2, 2, SnapshotId=snapshot_id)
    state, details = _initialization(ec2, volume_id)
    assert state == "initializing" and details is not None
    assert details["InitializationType"] == "default"
    assert "EstimatedTimeToCompleteInSeconds" not in details
    wait_for(lambda: _initialization(ec2, volume_id)[0] == "completed")


def test_fast_snapshot_restore_initializes_at_once(start_server: ServerFactory) -> None:
    fast = start_server(*DAY_A_SECOND)
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2, 1)
    ec2.enable_fast_snapshot_restores(SourceSnapshotIds=[snapshot_id], AvailabilityZones=[ZONE])
    wait_for(lambda: _fsr(ec2, snapshot_id) == "enabled")
    restored = ec2.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)["VolumeId"]
    assert _initialization(ec2, restored) == (
        "completed",
        {"InitializationType": "default", "Progress": 100},
    )
    fast_waiter(ec2, "volume_available")(VolumeIds=[restored])
    assert ec2.describe_volumes(VolumeIds=[restored])["Volumes"][0]["FastRestored"] is True
    by_filter = ec2.describe_volumes(Filters=[{"Name": "fast-restored", "Values": ["true"]}])
    assert [v["VolumeId"] for v in by_filter["Volumes"]] == [restored]
    elsewhere = new_volume(ec2, 1, zone=OTHER_ZONE, SnapshotId=snapshot_id)
    assert ec2.describe_volumes(VolumeIds=[elsewhere])["Volumes"][0]["FastRestored"] is False
    # A rate asked for wins over fast snapshot restore, as EC2 documents.
    rated = new_volume(ec2, 1, SnapshotId=snapshot_id, VolumeInitializationRate=300)
    assert ec2.describe_volumes(VolumeIds=[rated])["Volumes"][0]["FastRestored"] is False
    assert _details(ec2, rated)["InitializationType"] == "provisioned-rate"


def test_archiving_disables_fast_snapshot_restore(start_server: ServerFactory) -> None:
    fast = start_server(*DAY_A_SECOND)
    ec2 = fast.client()
    snapshot_id = _snapshot(ec2, 1)
    ec2.enable_fast_snapshot_restores(
        SourceSnapshotIds=[snapshot_id], AvailabilityZones=[ZONE, OTHER_ZONE]
    )
    wait_for(lambda: _fsr(ec2, snapshot_id) == _fsr(ec2, snapshot_id, OTHER_ZONE) == "enabled")
    ec2.modify_snapshot_tier(SnapshotId=snapshot_id, StorageTier="archive")
    seen = _states(lambda: _fsr(ec2, snapshot_id), "disabled", timeout=30)
    assert seen[-2:] == ["disabling", "disabled"], seen
    assert _tier(ec2, snapshot_id) == "archive archival-completed"
    wait_for(lambda: _fsr(ec2, snapshot_id, OTHER_ZONE) == "disabled")


def test_initialization_resumes_after_a_crash(start_server: ServerFactory) -> None:
    slow = start_server("--time-scale", "10")
    ec2 = slow.client()
    snapshot_id = _snapshot(ec2, 4)  # 4 GiB at 100 MiB/s: about 4 s here
    volume_id = new_volume(ec2, 4, SnapshotId=snapshot_id, VolumeInitializationRate=100)
    wait_for(lambda: _details(ec2, volume_id)["Progress"] > 0)
    before = _details(ec2, volume_id)["Progress"]
    slow.kill()

    slow.start()
    ec2 = slow.client()
    state, details = _initialization(ec2, volume_id)
    assert details is not None and details["Progress"] >= before
    if state == "initializing":
        assert details["Progress"] < 100
    wait_for(lambda: _initialization(ec2, volume_id)[0] == "completed")


def test_aws_cli_copy_volumes(server: Any) -> None:
    source = new_volume(server.client(), 2)
    copied = aws(server, "copy-volumes", "--source-volume-id", source, "--size", "3")
    assert copied["Volumes"][0]["SourceVolumeId"] == source
    assert copied["Volumes"][0]["Size"] == 3


def test_copy_resumes_after_a_crash(start_server: ServerFactory) -> None:
    slow = start_server("--latency", "2")
    ec2 = slow.client()
    source = new_volume(ec2, 1)
    copy = ec2.copy_volumes(SourceVolumeId=source)["Volumes"][0]["VolumeId"]
    assert ec2.describe_volumes(VolumeIds=[copy])["Volumes"][0]["State"] == "creating"
    slow.kill()

    slow.start()
    ec2 = slow.client()
    fast_waiter(ec2, "volume_available")(VolumeIds=[copy])
    wait_for(lambda: _initialization(ec2, copy)[0] == "completed")


def test_launch_restores_with_an_initialization_rate(ec2: Any) -> None:
    snapshot_id = _snapshot(ec2, 2)
    instance = ec2.run_instances(
        ImageId="ami-00000000000000001",
        MinCount=1,
        MaxCount=1,
        Placement={"AvailabilityZone": ZONE},
        BlockDeviceMappings=[
            {
                "DeviceName": "/dev/sdf",
                "Ebs": {"SnapshotId": snapshot_id, "VolumeInitializationRate": 150},
            },
            {"DeviceName": "/dev/sdg", "Ebs": {"SnapshotId": snapshot_id}},
            {"DeviceName": "/dev/sdh", "Ebs": {"VolumeSize": 1}},
        ],
    )["Instances"][0]
    fast_waiter(ec2, "instance_running")(InstanceIds=[instance["InstanceId"]])
    found = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]
    devices = {
        m["DeviceName"]: m["Ebs"]["VolumeId"] for m in found["Instances"][0]["BlockDeviceMappings"]
    }
    rated = ec2.describe_volumes(VolumeIds=[devices["/dev/sdf"]])["Volumes"][0]
    assert rated["VolumeInitializationRate"] == 150
    wait_for(lambda: _initialization(ec2, devices["/dev/sdf"])[0] == "completed")
    assert _details(ec2, devices["/dev/sdf"])["InitializationType"] == "provisioned-rate"
    wait_for(lambda: _initialization(ec2, devices["/dev/sdg"])[0] == "completed")
    assert _details(ec2, devices["/dev/sdg"])["InitializationType"] == "default"
    assert _initialization(ec2, devices["/dev/sdh"]) == (None, None)
    with pytest.raises(ClientError) as refused:
        ec2.run_instances(
            ImageId="ami-00000000000000001",
            MinCount=1,
            MaxCount=1,
            BlockDeviceMappings=[
                {
                    "DeviceName": "/dev/sdf",
                    "Ebs": {"VolumeSize": 1, "VolumeInitializationRate": 100},
                }
            ],
        )
    assert _code(refused) == "InvalidParameterCombination"
