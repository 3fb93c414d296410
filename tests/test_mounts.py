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
    assert "a new mount under it also appears under 2 other mount points: mount " in text
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


def _by_id(nodes: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for node in nodes:
        found[node["id"]] = node
        found.update(_by_id(node["children"]))
    return found


def test_a_filesystem_seen_twice_is_explained(lab: Path) -> None:
    """What Docker does with a plugin's propagated mount, in miniature: a directory of a
    shared mount bound onto itself joins that mount's peer group, so a volume mounted under
    the bind is copied under the shared mount too, at the same path, hidden by the bind."""
    bind, volume = lab / "propagated-mount", lab / "propagated-mount" / "vol"
    out = in_namespace(
        lab,
        f"""
        mount --make-shared {lab}
        mkdir {bind}
        mount --bind {bind} {bind}
        mkdir {volume}
        mount -t tmpfs vol {volume}
        echo seen > {volume}/file
        findmnt -rn -o ID,TARGET -R {lab}; echo ====
        cat /proc/self/mountinfo; echo ====
        cat {volume}/file; echo ====
        {sys.executable} -m fakestor mounts {bind}; echo ====
        {sys.executable} -m fakestor mounts --json {bind}
        """,
    )
    listed, mountinfo, content, text, as_json = out.split("====\n")
    table = {m.mount_id: m for m in mounts.parse_mountinfo(mountinfo)}
    shared = next(m for m in table.values() if m.target == str(lab))
    bound = next(m for m in table.values() if m.target == str(bind))
    copies = [m for m in table.values() if m.target == str(volume)]
    # The kernel lists the volume twice at one path: under the bind and under the shared mount.
    assert [line.split()[1] for line in listed.splitlines()].count(str(volume)) == 2
    assert {m.parent_id for m in copies} == {shared.mount_id, bound.mount_id}
    seen = next(m for m in copies if m.parent_id == bound.mount_id)
    hidden = next(m for m in copies if m.parent_id == shared.mount_id)
    assert content == "seen\n"  # the path leads to the copy under the bind
    group = shared.shared
    assert group is not None and bound.shared == group

    why = (
        f"the same mount copied by propagation: their parent mounts {bound.mount_id} ({bind}) "
        f"and {shared.mount_id} ({lab}) are peers in group {group}, so a mount made under "
        "either appears under both"
    )
    assert f"{volume}  vol tmpfs  shared:{seen.shared}  [mount {seen.mount_id}]" in text
    assert (
        f"same filesystem (vol, device {seen.device}, root /) as mount {hidden.mount_id} at "
        f"{volume} (hidden): {why}"
    ) in text
    assert (
        f"hidden: mount {bound.mount_id} is mounted over {bind}, so no path leads to this mount"
    ) in text
    assert (
        "a new mount under it also appears under 1 other mount point: "
        f"mount {hidden.mount_id} at {volume} (peer, hidden)"
    ) in text
    assert f"{bind}  {shared.source}[/propagated-mount] tmpfs  shared:{group}" in text

    nodes = _by_id(json.loads(as_json))
    assert nodes[seen.mount_id]["hidden_by"] is None
    assert nodes[hidden.mount_id]["hidden_by"] == bound.mount_id
    assert nodes[seen.mount_id]["same_filesystem_as"] == [
        {"id": hidden.mount_id, "target": str(volume), "hidden": True, "why": why}
    ]
    assert nodes[hidden.mount_id]["same_filesystem_as"][0]["id"] == seen.mount_id
    assert (nodes[seen.mount_id]["device"], nodes[seen.mount_id]["root"]) == (seen.device, "/")
    # The older key stays: the targets a new mount reaches.
    assert nodes[seen.mount_id]["propagates_to"] == [str(volume)]
    assert nodes[seen.mount_id]["new_mounts_also_appear_under"] == [
        {"id": hidden.mount_id, "target": str(volume), "as": "peer"}
    ]
    assert {"id": bound.mount_id, "target": str(bind), "as": "peer"} in (
        nodes[shared.mount_id]["new_mounts_also_appear_under"]
    )


def test_a_bind_and_its_slave_are_explained(lab: Path) -> None:
    """SETUP's b is a shared bind of a (peers) and c a slave bind: one filesystem, three mounts."""
    out = in_namespace(lab, f"{sys.executable} -m fakestor mounts --json {lab}")
    nodes = {node["target"]: node for node in _by_id(json.loads(out)).values()}
    a, b, c = (nodes[str(lab / name)] for name in "abc")
    whys = {twin["id"]: twin["why"] for twin in a["same_filesystem_as"]}
    assert whys[b["id"]] == (
        f"a bind mount: mounts {a['id']} ({lab / 'a'}) and {b['id']} ({lab / 'b'}) are peers in "
        f"group {a['peer_group']}, so a mount made under either appears under both"
    )
    assert whys[c["id"]] == (
        f"a bind mount: mounts {a['id']} ({lab / 'a'}, shared:{a['peer_group']}) and {c['id']} "
        f"({lab / 'c'}, master:{a['peer_group']}) both receive the new mounts of peer group "
        f"{a['peer_group']}"
    )
    assert nodes[str(lab / "p")]["same_filesystem_as"] == []


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
