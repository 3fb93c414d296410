"""The /ui page in headless Chromium: volumes, attachments, devices and the mount tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ServerFactory, new_volume, require
from tests.test_loopdev import machine

pytestmark = pytest.mark.privileged

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--virtual-time-budget=5000",
]  # fmt: skip


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    require(browser is not None, "needs Debian's chromium (apt-get install chromium)")
    assert browser is not None
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_ui_shows_volumes_devices_and_the_mount_tree(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    with machine(start_server, tmp_path, "loopdev") as host:
        volume_id = new_volume(
            host.ec2, 2, TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "ui-demo"}]}
            ],
        )  # fmt: skip
        idle = new_volume(host.ec2, 1)
        device = host.attach(volume_id)
        subprocess.run(["mkfs.ext4", "-q", str(device)], check=True)
        point = host.mount(device, "ui-mount")
        url = f"{host.server.url}/ui"

        dom = chromium(tmp_path / "profile", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr
        page = dom.stdout
        assert f"<td>{volume_id}</td><td>ui-demo</td><td>2 GiB</td>" in page
        assert f"<td>{idle}</td>" in page
        assert f"{host.server.host_instance_id} as /dev/sdf (attached)" in page
        assert "/dev/loop" in page and "nvme-Amazon_Elastic_Block_Store_vol" in page
        assert 'class="mount-tree"' in page
        assert f'data-target="{point}"' in page  # the volume's mount, marked as fakestor's
        assert "fakestor: volume" in page

        screenshot = tmp_path / "ui.png"
        shot = chromium(
            tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1400,1600", url
        )
        assert shot.returncode == 0, shot.stderr
        assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
        host.unmount(point)
        host.detach(volume_id)
