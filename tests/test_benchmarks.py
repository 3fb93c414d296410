"""The benchmarks' smoke mode, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import require_root_and_loop

pytestmark = pytest.mark.privileged


def test_benchmarks_quick_mode_runs() -> None:
    require_root_and_loop()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--runs", "1", "--no-record"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| attach -> device usable" in result.stdout
    assert "| snapshot" in result.stdout
