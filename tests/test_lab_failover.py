"""`fakestor lab failover`: the guided lab brings up its own 3-node cluster, walks a service's
volume through a drain and a lost node, checks each step, and takes everything down."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require, require_root_and_loop
from tests.docker_env import require_docker

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent


def test_the_failover_lab_runs_every_step_and_leaves_nothing() -> None:
    require_root_and_loop()
    require_docker()
    for tool in ("nbdkit", "nbdfuse", "mmdebstrap", "nsenter"):
        require(shutil.which(tool) is not None, f"needs {tool} (devenv/test installs it)")
    before = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    result = subprocess.run(
        [sys.executable, "-m", "fakestor", "lab", "failover"],
        capture_output=True, text=True, timeout=1200,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FAKESTOR_CLUSTER_PREFIX": "fsl",
             "FAKESTOR_CLUSTER_SUBNET": "10.236.0", "FAKESTOR_CLUSTER_PORT": "8780",
             "FAKESTOR_VENV": sys.prefix},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for step in ("step 1: a service with an EBS volume", "step 2: drain the node it runs on",
                 "step 3: lose a node without warning"):  # fmt: skip
        assert step in output
    assert "FAILED" not in output
    assert "the data moved with it" in output and "no data was lost" in output
    assert "The cluster is gone" in output
    after = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert after == before
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [name for name in namespaces.split() if name.startswith("fsl")]
