"""The aws CLI against fakestor, and fakestor's own command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ZONE, Server


def _aws_command() -> list[str]:
    # The aws CLI installed beside this Python (the test environment's own).
    beside = Path(sys.executable).with_name("aws")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("aws")
    if found is None:
        if IN_CI:
            pytest.fail("the aws CLI is not installed (pip install awscli)")
        pytest.skip("the aws CLI is not installed (pip install awscli)")
    return [found]


def _run_aws(server: Server, *args: str, service: str = "ec2") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDFAKESTOR",
        "AWS_SECRET_ACCESS_KEY": "fakestor-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [*_aws_command(), "--endpoint-url", server.url, "--output", "json", service, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def aws(server: Server, *args: str, service: str = "ec2") -> Any:
    result = _run_aws(server, *args, service=service)
    if result.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed: {result.stderr}")
    return json.loads(result.stdout) if result.stdout.strip() else None


def aws_error(server: Server, *args: str) -> str:
    result = _run_aws(server, *args)
    assert result.returncode != 0
    return result.stderr


def test_aws_cli_volume_round_trip(server: Server) -> None:
    created = aws(
        server,
        "create-volume",
        "--availability-zone", ZONE,
        "--size", "4",
        "--volume-type", "gp3",
        "--tag-specifications", "ResourceType=volume,Tags=[{Key=Name,Value=cli}]",
    )  # fmt: skip
    volume_id = created["VolumeId"]
    aws(server, "wait", "volume-available", "--volume-ids", volume_id)
    described = aws(server, "describe-volumes", "--filters", "Name=tag:Name,Values=cli")
    assert volume_id in [v["VolumeId"] for v in described["Volumes"]]
    aws(
        server,
        "attach-volume",
        "--volume-id", volume_id,
        "--instance-id", server.host_instance_id,
        "--device", "/dev/sdm",
    )  # fmt: skip
    aws(server, "wait", "volume-in-use", "--volume-ids", volume_id)
    snapshot = aws(server, "create-snapshot", "--volume-id", volume_id, "--description", "cli")
    aws(server, "wait", "snapshot-completed", "--snapshot-ids", snapshot["SnapshotId"])
    aws(server, "detach-volume", "--volume-id", volume_id)
    aws(server, "wait", "volume-available", "--volume-ids", volume_id)
    aws(server, "delete-volume", "--volume-id", volume_id)
    aws(server, "wait", "volume-deleted", "--volume-ids", volume_id)
    # The CLI's own paginator walks NextToken.
    paged = aws(server, "describe-snapshots", "--owner-ids", "self", "--page-size", "5")
    assert snapshot["SnapshotId"] in [s["SnapshotId"] for s in paged["Snapshots"]]
    # With no arguments the CLI sends MaxResults=1000, above DescribeVolumes' 500: EC2 caps it.
    everything = aws(server, "describe-volumes")
    assert isinstance(everything["Volumes"], list)
    every_snapshot = aws(server, "describe-snapshots", "--owner-ids", "self")
    assert snapshot["SnapshotId"] in [s["SnapshotId"] for s in every_snapshot["Snapshots"]]


def test_aws_cli_shows_ec2_errors(server: Server) -> None:
    message = aws_error(server, "describe-volumes", "--volume-ids", "vol-0123456789abcdef0")
    assert "InvalidVolume.NotFound" in message
    assert "vol-0123456789abcdef0" in message


def _fakestor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fakestor", *args], capture_output=True, text=True, timeout=30
    )


def test_aws_cli_ebs_direct_lists_snapshot_blocks(server: Server) -> None:
    started = aws(server, "start-snapshot", "--volume-size", "1", service="ebs")
    snapshot_id = started["SnapshotId"]
    aws(server, "complete-snapshot", "--snapshot-id", snapshot_id,
        "--changed-blocks-count", "0", service="ebs")  # fmt: skip
    aws(server, "wait", "snapshot-completed", "--snapshot-ids", snapshot_id)
    listed = aws(server, "list-snapshot-blocks", "--snapshot-id", snapshot_id, service="ebs")
    assert listed["BlockSize"] == 524288 and listed["VolumeSize"] == 1
    assert listed["Blocks"] == []  # the metadata backend keeps no data
    missing = _run_aws(
        server, "list-snapshot-blocks", "--snapshot-id", "snap-0123456789abcdef0", service="ebs"
    )
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["server", "--listen", "127.0.0.1:http"], "HOST:PORT"),
        (["server", "--listen", "127.0.0.1:70000"], "out of range"),
        (["server", "--zones", "A1"], "zone letters"),
        (["server", "--account-id", "12"], "12 digits"),
        (["server", "--latency", "-1"], "negative"),
        (["server", "--backend", "tape"], "invalid choice"),
        (["server", "--listen", "203.0.113.7:0"], "cannot serve"),
        (["server", "--listen", "nonsense"], "neither an IP address nor a known host name"),
        (["server", "--region", "xx-nowhere-1"], "not an EC2 region of AWS's aws partition"),
        (["server", "--listen", "0.0.0.0:0"], "reachable beyond loopback"),
        (["server", "--credentials", "/nonexistent/keys"], "cannot read credentials file"),
        (["server", "--credentials", "/dev/null"], "holds no 'ACCESS_KEY_ID"),
    ],
)
def test_bad_command_lines_exit_with_one_readable_line(
    args: list[str], words: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    result = _fakestor(*args, "--data-dir", str(data_dir))
    assert result.returncode != 0
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not data_dir.exists()  # refused before anything was created


@pytest.mark.parametrize("backend", ["metadata", "auto"])
def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path: Path, backend: str) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("mine")
    result = _fakestor("server", "--backend", backend, "--listen", "127.0.0.1:0",
                       "--data-dir", str(not_a_dir))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"fakestor: --data-dir {not_a_dir} is not a directory; name a directory (or a new path)"
    ]
    assert not_a_dir.read_text() == "mine"
    assert sorted(tmp_path.iterdir()) == [not_a_dir]


def test_plugin_without_a_server_says_so_in_one_line(tmp_path: Path) -> None:
    result = _fakestor(
        "plugin", "--socket", str(tmp_path / "p.sock"), "--endpoint", "http://127.0.0.1:9",
        "--mount-root", str(tmp_path / "m"), "--state-dir", str(tmp_path / "s"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot read instance metadata from http://127.0.0.1:9" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _fakestor("plugin", "--socket", str(tmp_path / "plugin"))
    assert result.returncode == 1 and ".sock" in result.stderr
