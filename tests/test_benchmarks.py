"""The benchmarks' smoke mode, so they cannot rot."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import write_section
from tests.conftest import require, require_root_and_loop


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    results = tmp_path / "BENCHMARKS.md"
    results.write_text("# Benchmarks\n\nIntroduction stays.\n")
    write_section("alpha", "## Alpha\n\nfirst", results=results)
    write_section("beta", "## Beta\n\nsecond", results=results)
    write_section("alpha", "## Alpha\n\nagain", results=results)
    text = results.read_text()
    assert text.startswith("# Benchmarks\n\nIntroduction stays.\n")
    assert "first" not in text
    assert text.index("again") < text.index("second")  # replaced in place, not appended
    assert text.count("<!-- begin alpha -->") == 1
    assert text.count("_Measured ") == 2


@pytest.mark.privileged
def test_benchmarks_quick_mode_runs() -> None:
    require_root_and_loop()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--runs",
            "1",
            "--no-record",
            "--only",
            "loopdev",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| attach -> device usable" in result.stdout
    assert "| snapshot" in result.stdout


@pytest.mark.privileged
def test_datapath_benchmark_quick_mode_runs() -> None:
    require_root_and_loop()
    require(shutil.which("fio") is not None, "needs fio (apt-get install fio)")
    require(importlib.util.find_spec("pyfuse3") is not None, "needs pyfuse3 (fakestor[fuse])")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record", "--only", "datapath"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| rand read 4 KiB |" in result.stdout
    assert "fuse volume (ext4)" in result.stdout
    assert "loopdev via the policy layer / loopdev direct" in result.stdout


def test_control_plane_benchmark_quick_mode_runs() -> None:
    require(importlib.util.find_spec("moto") is not None, "needs moto[server] (pip install)")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record", "--only", "control-plane"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| CreateVolume with tags |" in result.stdout
    assert "| by tag filter |" in result.stdout


@pytest.mark.privileged
def test_snapshot_and_scale_benchmarks_quick_mode_run() -> None:
    require_root_and_loop()
    require(importlib.util.find_spec("pyfuse3") is not None, "needs pyfuse3 (fakestor[fuse])")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record",
         "--only", "snapshots", "--only", "scale"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| 1 GiB, 64 MiB written |" in result.stdout
    assert "| attach, all usable |" in result.stdout
    assert "| floor: one DescribeVolumes round trip per volume |" in result.stdout
    left_behind = "Left behind after the runs: 0 loop devices, 0 `/dev/disk/by-id` links, 0 volume"
    assert left_behind in result.stdout


@pytest.mark.privileged
def test_docker_benchmark_quick_mode_runs() -> None:
    require_root_and_loop()
    require(shutil.which("dockerd") is not None, "needs dockerd (apt-get install docker.io)")
    require(shutil.which("mmdebstrap") is not None, "needs mmdebstrap")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record", "--only", "docker"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| create + first run + rm |" in result.stdout
    assert "| rand read 4 KiB |" in result.stdout


@pytest.mark.privileged
def test_ebs_direct_benchmark_quick_mode_runs() -> None:
    require_root_and_loop()
    require(importlib.util.find_spec("pyfuse3") is not None, "needs pyfuse3 (fakestor[fuse])")
    require(importlib.util.find_spec("moto") is not None, "needs moto[server] (pip install)")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record", "--only", "ebs-direct"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| full read: ListSnapshotBlocks + GetSnapshotBlock |" in result.stdout
    assert "| changed blocks listed | 8 | 8 | 8 |" in result.stdout


@pytest.mark.privileged
def test_nodes_benchmark_quick_mode_runs() -> None:
    require_root_and_loop()
    for tool in ("fio", "nbdkit", "nbdfuse"):
        require(shutil.which(tool) is not None, f"needs {tool} (apt-get install)")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-record", "--only", "nodes"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| rand read 4 KiB, qd 1 |" in result.stdout
    assert "node over NBD, TLS-PSK" in result.stdout


# The failover benchmark's smoke run is in tests/test_cluster.py, on that module's cluster.
