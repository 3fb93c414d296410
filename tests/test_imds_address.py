"""Instance metadata at EC2's address, 169.254.169.254:80, in a network namespace the test
makes (the machine's own interfaces are not touched)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require, wait_for

pytestmark = pytest.mark.privileged

FETCH = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
)


@pytest.fixture
def namespace() -> Iterator[str]:
    require(os.geteuid() == 0, "needs root (network namespaces)")
    name = f"fakestor-imds-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _in(namespace: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *command], capture_output=True, text=True, check=False
    )


def test_metadata_at_ec2s_address_while_the_server_runs(namespace: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "fakestor", "server",
             "--backend", "metadata", "--listen", "127.0.0.1:0", "--data-dir",
             str(tmp_path / "data"), "--imds-address"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        ready = wait_for(
            lambda: (
                re.search(r"also at http://169\.254\.169\.254/", log.read_text())
                or server.poll() is not None
            )
        )
        assert server.poll() is None, log.read_text()
        assert ready
        host = re.search(r"host instance (i-[0-9a-f]+)", log.read_text())
        assert host is not None
        url = "http://169.254.169.254/latest/meta-data/instance-id"
        fetched = _in(namespace, sys.executable, "-c", FETCH, url)
        assert fetched.stdout.strip() == host.group(1), fetched.stderr
        assert " 169.254.169.254/32 " in _in(namespace, "ip", "-o", "addr", "show", "lo").stdout
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0, log.read_text()
    # The address goes with the server that added it.
    assert "169.254.169.254" not in _in(namespace, "ip", "-o", "addr", "show", "lo").stdout


def test_the_address_is_never_taken_unasked(namespace: str, tmp_path: Path) -> None:
    result = _in(namespace, sys.executable, "-m", "fakestor", "server", "--help")
    assert "--imds-address" in result.stdout and "off unless given" in result.stdout
    assert "169.254.169.254" not in _in(namespace, "ip", "-o", "addr", "show", "lo").stdout
