"""The /ui page in headless Chromium: volumes, attachments, devices and the mount tree."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

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


# Waits for the page's first refresh, then records what a 1280 px window lays out: how far
# right the mount picture reaches, and on how many lines each volume id is written.
MEASURE = """<script>
const measuring = setInterval(() => {
  const svg = document.querySelector("#mounts svg");
  const rows = [...document.querySelectorAll("#volumes tbody tr")];
  if (!svg || rows.length === 0) return;
  clearInterval(measuring);
  const lines = cell => {
    const text = document.createRange();
    text.selectNodeContents(cell);
    return text.getClientRects().length;
  };
  document.body.dataset.measured = JSON.stringify({
    window: document.documentElement.clientWidth,
    svgRight: svg.getBoundingClientRect().right,
    idLines: Object.fromEntries(rows.map(row => [row.cells[0].textContent, lines(row.cells[0])])),
  });
}, 100);
</script>"""


def layout_at_1280_px(profile: Path, server_url: str, scratch: Path) -> dict[str, Any]:
    """The /ui page as served, pointed back at the server and with MEASURE added, laid out
    by Chromium in a 1280 px window (a file page fetching from the server: hence
    --disable-web-security, in a profile of the test's own)."""
    with urllib.request.urlopen(f"{server_url}/ui") as response:
        page = response.read().decode()
    page = page.replace("<head>", f'<head><base href="{server_url}/">', 1)
    copy = scratch / "measured-ui.html"
    copy.write_text(page.replace("</body>", MEASURE + "</body>"))
    dom = chromium(
        profile, "--disable-web-security", "--window-size=1280,1000", "--dump-dom", copy.as_uri()
    )
    assert dom.returncode == 0, dom.stderr
    found = re.search(r'data-measured="([^"]*)"', dom.stdout)
    assert found, dom.stdout[-2000:]
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return measured


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

        # In a 1280 px window the picture fits and volume ids stay on one line, even beside
        # an attachment and a long device path.
        layout = layout_at_1280_px(tmp_path / "profile-1280", host.server.url, tmp_path)
        assert layout["svgRight"] <= layout["window"] <= 1280, layout
        assert layout["idLines"] == {volume_id: 1, idle: 1}, layout
        host.unmount(point)
        host.detach(volume_id)
