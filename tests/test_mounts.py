"""The mountinfo parser and propagation rules against the kernel and findmnt.

Each test builds its mounts inside a new mount namespace (unshare), so the
machine's own mount table is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fakestor import mounts
from fakestor.mounts_svg import render_svg
from tests.conftest import require

pytestmark = pytest.mark.privileged

SETUP = """
set -e
mount -t tmpfs lab {root}
mkdir -p {root}/a {root}/b {root}/c {root}/p {root}/u {root}/'with space'
mount -t tmpfs a {root}/a
mount --make-shared {root}/a
mount --bind {root}/a {root}/b
mount --bind {root}/a {root}/c
mount --make-slave {root}/c
mount -t tmpfs p {root}/p
mount --make-private {root}/p
mount -t tmpfs u {root}/u
mount --make-unbindable {root}/u
mount -t tmpfs s {root}/'with space'
"""


def in_namespace(root: Path, script: str) -> str:
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c",
         SETUP.format(root=root) + script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    require(os.geteuid() == 0, "needs root for mount namespaces")
    root = tmp_path / "lab"  # a tmpfs covers it inside the namespace; keep files beside it
    root.mkdir()
    return root


def _flatten(nodes: list[dict[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in nodes:
        found[node["target"]] = node["propagation"]
        found.update(_flatten(node.get("children", [])))
    return found


def test_parser_agrees_with_findmnt(lab: Path) -> None:
    out = in_namespace(
        lab,
        f"cat /proc/self/mountinfo; echo ====; findmnt -J -o ID,TARGET,PROPAGATION -R {lab}",
    )
    mountinfo, findmnt = out.split("====\n")
    parsed = mounts.parse_mountinfo(mountinfo)
    expected = _flatten(json.loads(findmnt)["filesystems"])
    ours = {m.target: m.propagation for m in parsed if m.target.startswith(str(lab))}
    assert ours == expected
    assert ours[str(lab / "with space")] == "private"
    assert ours[str(lab / "c")] == "private,slave"
    assert ours[str(lab / "u")] == "private,unbindable"


def test_is_mounted_reads_escaped_paths(lab: Path) -> None:
    check = (
        "from fakestor.mounts import is_mounted; import sys; "
        "print(is_mounted(sys.argv[1]), is_mounted(sys.argv[2]))"
    )
    out = in_namespace(lab, f"{sys.executable} -c '{check}' '{lab}/with space' '{lab}/with'")
    assert out.split() == ["True", "False"]


def test_receivers_match_what_the_kernel_propagates(lab: Path) -> None:
    # Mount under a (shared) and under c (its slave); see where each shows up.
    out = in_namespace(
        lab,
        f"""
        cat /proc/self/mountinfo; echo ====
        mkdir {lab}/a/new {lab}/c/own
        mount -t tmpfs new {lab}/a/new
        mount -t tmpfs own {lab}/c/own
        findmnt -rn -o TARGET -R {lab}
        """,
    )
    mountinfo, after = out.split("====\n")
    parsed = mounts.parse_mountinfo(mountinfo)
    mounts.link(parsed)
    by_target = {m.target: m for m in parsed}
    a, b, c = (by_target[str(lab / name)] for name in "abc")
    assert {m.target for m in mounts.receivers(a, parsed)} == {b.target, c.target}
    assert mounts.receivers(c, parsed) == []  # a slave sends nothing back
    assert mounts.receivers(by_target[str(lab / "p")], parsed) == []
    seen = set(after.split())
    # The kernel agrees: a's new mount reached b and c; c's own mount stayed in c.
    assert {str(lab / "a/new"), str(lab / "b/new"), str(lab / "c/new")} <= seen
    assert str(lab / "c/own") in seen
    assert str(lab / "a/own") not in seen and str(lab / "b/own") not in seen


def test_cli_text_json_and_svg(lab: Path, tmp_path: Path) -> None:
    svg = tmp_path / "tree.svg"
    script = (
        f"{sys.executable} -m fakestor mounts {lab}; echo ====;"
        f"{sys.executable} -m fakestor mounts --json {lab}; echo ====;"
        f"{sys.executable} -m fakestor mounts --svg {svg} {lab}"
    )
    text, as_json, svg_note = in_namespace(lab, script).split("====\n")
    assert f"{lab}/a  a tmpfs  shared:" in text
    assert "-> propagates to 2" in text
    assert "master:" in text and "private" in text
    assert "shared:N - mounts and unmounts" in text
    tree = json.loads(as_json)
    flat: dict[str, dict[str, Any]] = {}

    def visit(node: dict[str, Any]) -> None:
        flat[node["target"]] = node
        for child in node["children"]:
            visit(child)

    for node in tree:
        visit(node)
    assert flat[str(lab / "a")]["propagation"] == "shared"
    assert sorted(flat[str(lab / "a")]["propagates_to"]) == [str(lab / "b"), str(lab / "c")]
    assert flat[str(lab / "c")]["master"] == flat[str(lab / "a")]["peer_group"]
    assert "wrote" in svg_note
    picture = svg.read_text()
    assert picture.startswith("<svg") and picture.count('class="propagation"') >= 2
    assert f'data-target="{lab}/a"' in picture


def test_cli_refuses_bad_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakestor", "mounts", "--pid", "nope"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "process id" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "fakestor", "mounts", "--pid", "999999999"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "cannot read the mounts" in result.stderr


def test_render_svg_of_the_real_table_is_well_formed() -> None:
    from xml.etree import ElementTree

    found = mounts.read_mounts()
    ElementTree.fromstring(render_svg(mounts.select(found, []), found))
