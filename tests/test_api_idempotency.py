"""ClientToken idempotency of CreateVolume and RunInstances, the creating actions whose
API takes one: a retry gets the first result, other parameters an error, across restarts."""

from __future__ import annotations

import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import OTHER_ZONE, ZONE, Server, ServerFactory, fast_waiter, new_volume

VOLUME_MISMATCH = (
    "Parameters on this idempotent request are inconsistent with parameters used in "
    "previous request(s)"
)
INSTANCES_MISMATCH = (
    "Arguments on this idempotent request are inconsistent with arguments used in "
    "previous request(s)."
)
SPENT = (
    "The client token you have provided is associated with a resource that is already "
    "deleted. Please use a different client token."
)
IMAGE = "ami-00000000000000001"


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def _token() -> str:
    return f"token-{uuid.uuid4()}"


def _named(name: str, resource_type: str = "volume") -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": [{"Key": "Name", "Value": name}]}]


def _volumes_named(ec2: Any, name: str) -> list[str]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
    return [volume["VolumeId"] for volume in found]


def _query(server: Server, **params: str) -> str:
    """A raw EC2 Query request: boto3 always sends a ClientToken where the API has one."""
    body = urllib.parse.urlencode(params).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(server.url, data=body)) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


def _state_db(server: Server) -> sqlite3.Connection:
    """The stopped server's state store, for what only time would otherwise show."""
    assert server.process is None
    return sqlite3.connect(server.data_dir / "state.db")


def _window(server: Server, token: str) -> tuple[datetime, datetime | None]:
    with closing(_state_db(server)) as db:
        created, expires = db.execute(
            "SELECT created_at, expires_at FROM client_tokens WHERE token=?", (token,)
        ).fetchone()
    return datetime.fromisoformat(created), datetime.fromisoformat(expires) if expires else None


def _let_time_pass(server: Server, token: str, hours: float) -> None:
    created, expires = _window(server, token)
    assert expires is not None
    back = timedelta(hours=hours)
    with closing(_state_db(server)) as db, db:
        db.execute(
            "UPDATE client_tokens SET created_at=?, expires_at=? WHERE token=?",
            ((created - back).isoformat(), (expires - back).isoformat(), token),
        )


# ---- CreateVolume -------------------------------------------------------------------


def test_a_retry_gets_the_first_volume(ec2: Any) -> None:
    token, name = _token(), _token()
    asked = {"AvailabilityZone": ZONE, "Size": 2, "VolumeType": "gp3"}
    asked["TagSpecifications"] = _named(name)
    first = ec2.create_volume(ClientToken=token, **asked)
    fast_waiter(ec2, "volume_available")(VolumeIds=[first["VolumeId"]])
    again = ec2.create_volume(ClientToken=token, **asked)
    assert again["VolumeId"] == first["VolumeId"]
    # The volume as it is now, as EC2 answers a replay.
    assert (first["State"], again["State"]) == ("creating", "available")
    assert again["Size"] == 2 and again["Tags"] == first["Tags"]
    assert _volumes_named(ec2, name) == [first["VolumeId"]]


@pytest.mark.parametrize(
    "other",
    [{"Size": 3}, {"VolumeType": "gp2"}, {"Encrypted": True}, {"TagSpecifications": _named("x")}],
)
def test_the_same_token_with_other_parameters_is_refused(ec2: Any, other: dict[str, Any]) -> None:
    token, name = _token(), _token()
    asked = {"AvailabilityZone": ZONE, "Size": 2, "TagSpecifications": _named(name)}
    first = ec2.create_volume(ClientToken=token, **asked)
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(ClientToken=token, **{**asked, **other})
    assert _error(excinfo) == ("IdempotentParameterMismatch", VOLUME_MISMATCH)
    assert _volumes_named(ec2, name) == [first["VolumeId"]]
    assert ec2.create_volume(ClientToken=token, **asked)["VolumeId"] == first["VolumeId"]


def test_a_token_is_zonal(ec2: Any) -> None:
    token = _token()
    here = ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1)["VolumeId"]
    there = ec2.create_volume(ClientToken=token, AvailabilityZone=OTHER_ZONE, Size=1)["VolumeId"]
    assert here != there
    # By zone id it is the same zone, and so the same request.
    again = ec2.create_volume(ClientToken=token, AvailabilityZoneId="use1-az2", Size=1)
    assert again["VolumeId"] == there


def test_tokens_are_case_sensitive(ec2: Any) -> None:
    token = f"Token-{uuid.uuid4()}"
    first = ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1)["VolumeId"]
    other = ec2.create_volume(ClientToken=token.lower(), AvailabilityZone=ZONE, Size=1)
    assert other["VolumeId"] != first


def test_a_token_of_more_than_64_characters_is_refused(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(ClientToken="t" * 65, AvailabilityZone=ZONE, Size=1)
    assert _error(excinfo) == (
        "InvalidParameterValue",
        "Client token must be less than or equal to 64 characters",
    )
    ec2.create_volume(ClientToken=uuid.uuid4().hex * 2, AvailabilityZone=ZONE, Size=1)


def test_a_dry_run_neither_records_nor_replays(ec2: Any) -> None:
    token = _token()
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1, DryRun=True)
    assert _error(excinfo)[0] == "DryRunOperation"
    # Nothing was recorded: other parameters are this token's first request.
    made = ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=2)["VolumeId"]
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=2, DryRun=True)
    assert _error(excinfo)[0] == "DryRunOperation"
    assert ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=2)["VolumeId"] == made


def test_a_refused_request_records_nothing(ec2: Any) -> None:
    token = _token()
    with pytest.raises(ClientError):
        ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1, VolumeType="io1")
    ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1)


def test_the_token_of_a_deleted_volume_stays_spent(ec2: Any) -> None:
    token = _token()
    volume_id = new_volume(ec2, ClientToken=token)
    ec2.delete_volume(VolumeId=volume_id)
    fast_waiter(ec2, "volume_deleted")(VolumeIds=[volume_id])
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1)
    assert _error(excinfo) == ("IdempotentParameterMismatch", SPENT)


def test_requests_without_a_token_each_create(ec2: Any, server: Server) -> None:
    answers = [_query(server, Action="CreateVolume", AvailabilityZone=ZONE, Size="1") for _ in "ab"]
    made = {re.findall(r"<volumeId>(vol-[0-9a-f]+)</volumeId>", answer)[0] for answer in answers}
    assert len(made) == 2
    # boto3 fills in a token of its own for each call.
    first, second = (ec2.create_volume(AvailabilityZone=ZONE, Size=1) for _ in range(2))
    assert first["VolumeId"] != second["VolumeId"]


def test_a_volume_token_outlives_a_restart_for_12_hours(start_server: ServerFactory) -> None:
    server = start_server()
    ec2 = server.client()
    token = _token()
    first = ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1)["VolumeId"]
    assert server.stop() == 0
    created, expires = _window(server, token)
    assert expires is not None and expires - created == timedelta(hours=12)
    server.start()
    ec2 = server.client()
    assert ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=1)["VolumeId"] == first
    with pytest.raises(ClientError) as excinfo:
        ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=2)
    assert _error(excinfo) == ("IdempotentParameterMismatch", VOLUME_MISMATCH)

    assert server.stop() == 0
    _let_time_pass(server, token, hours=12)
    server.start()
    ec2 = server.client()
    again = ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=2)["VolumeId"]
    assert again != first
    assert ec2.create_volume(ClientToken=token, AvailabilityZone=ZONE, Size=2)["VolumeId"] == again


# ---- RunInstances ------------------------------------------------------------------


def _launch(ec2: Any, token: str, **extra: Any) -> dict[str, Any]:
    reservation: dict[str, Any] = ec2.run_instances(
        ClientToken=token, ImageId=IMAGE, MinCount=2, MaxCount=2, **extra
    )
    return reservation


def _instance_ids(reservation: dict[str, Any]) -> list[str]:
    return [instance["InstanceId"] for instance in reservation["Instances"]]


def test_a_launch_retry_gets_the_first_reservation(ec2: Any) -> None:
    token, name = _token(), _token()
    first = _launch(ec2, token, TagSpecifications=_named(name, "instance"))
    fast_waiter(ec2, "instance_running")(InstanceIds=_instance_ids(first))
    again = _launch(ec2, token, TagSpecifications=_named(name, "instance"))
    assert again["ReservationId"] == first["ReservationId"]
    assert _instance_ids(again) == _instance_ids(first)
    assert [i["AmiLaunchIndex"] for i in again["Instances"]] == [0, 1]
    assert {i["State"]["Name"] for i in again["Instances"]} == {"running"}
    found = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])
    assert [r["ReservationId"] for r in found["Reservations"]] == [first["ReservationId"]]

    with pytest.raises(ClientError) as excinfo:
        _launch(ec2, token, TagSpecifications=_named(name, "instance"), InstanceType="t3.micro")
    assert _error(excinfo) == ("IdempotentParameterMismatch", INSTANCES_MISMATCH)
    with pytest.raises(ClientError) as excinfo:
        _launch(ec2, token, TagSpecifications=_named(name, "instance"), DryRun=True)
    assert _error(excinfo)[0] == "DryRunOperation"
    found = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])
    assert len(found["Reservations"]) == 1


def test_a_launch_token_is_regional_without_a_zone_and_zonal_with_one(ec2: Any) -> None:
    token = _token()
    regional = _launch(ec2, token)["ReservationId"]
    zonal = _launch(ec2, token, Placement={"AvailabilityZone": ZONE})["ReservationId"]
    elsewhere = _launch(ec2, token, Placement={"AvailabilityZone": OTHER_ZONE})["ReservationId"]
    assert len({regional, zonal, elsewhere}) == 3
    assert _launch(ec2, token)["ReservationId"] == regional
    assert _launch(ec2, token, Placement={"AvailabilityZone": ZONE})["ReservationId"] == zonal


def test_a_launch_token_of_more_than_64_characters_is_refused(ec2: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        _launch(ec2, "t" * 65)
    assert _error(excinfo) == (
        "InvalidParameterValue",
        "Client token must be less than or equal to 64 characters",
    )


def test_launches_without_a_token_each_launch(ec2: Any, server: Server) -> None:
    # boto3 fills in a token of its own for each call, as the API asks.
    first, second = (ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1) for _ in "ab")
    assert first["ReservationId"] != second["ReservationId"]
    answers = [
        _query(server, Action="RunInstances", ImageId=IMAGE, MinCount="1", MaxCount="1")
        for _ in "ab"
    ]
    made = {re.findall(r"<reservationId>(r-[0-9a-f]+)</reservationId>", a)[0] for a in answers}
    assert len(made) == 2


def test_a_launch_token_lasts_24_hours_after_its_instances_end(start_server: ServerFactory) -> None:
    server = start_server()
    ec2 = server.client()
    token = _token()
    first = _launch(ec2, token)
    assert server.stop() == 0
    assert _window(server, token)[1] is None  # no end in sight while an instance lives
    server.start()
    ec2 = server.client()
    assert _instance_ids(_launch(ec2, token)) == _instance_ids(first)
    ec2.terminate_instances(InstanceIds=_instance_ids(first))
    fast_waiter(ec2, "instance_terminated")(InstanceIds=_instance_ids(first))
    again = _launch(ec2, token)
    assert again["ReservationId"] == first["ReservationId"]
    assert {i["State"]["Name"] for i in again["Instances"]} == {"terminated"}

    assert server.stop() == 0
    _, expires = _window(server, token)
    assert expires is not None and expires - datetime.now(UTC) > timedelta(hours=23)
    _let_time_pass(server, token, hours=24)
    server.start()
    assert _launch(server.client(), token)["ReservationId"] != first["ReservationId"]


def test_copy_snapshot_and_create_snapshots_take_no_token(server: Server) -> None:
    requests = [
        {"Action": "CopySnapshot", "SourceSnapshotId": "snap-0123456789abcdef0"},
        {"Action": "CreateSnapshots", "InstanceSpecification.InstanceId": "i-0123456789abcdef0"},
    ]
    requests[0]["SourceRegion"] = "us-east-1"
    for request in requests:
        answer = _query(server, ClientToken="t", **request)
        assert "<Code>UnknownParameter</Code>" in answer and "ClientToken" in answer, answer
