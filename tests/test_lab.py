"""The propagation lab's Docker steps print what each container saw, next to each check.

Steps 3 to 5 run against the tests' own dockerd with the managed plugin enabled (the
fixture of test_managed_plugin, built once per module).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakestor.lab import Lab
from fakestor.mounts import mount_table
from tests import test_managed_plugin

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

managed = test_managed_plugin.managed
FINDMNT_ROW = re.compile(r"^ +\d+ +\d+ +\S+ +[└├│─ ]*(\S+) +\S+$")


def _after(lines: list[str], saw: str, ok: str) -> None:
    """`saw` is printed, and the check `ok` right after it."""
    assert saw in lines, "\n".join(lines)
    assert lines[lines.index(saw) + 1] == f"  ok: {ok}", "\n".join(lines)


def test_lab_docker_steps_show_what_each_container_saw(
    managed: test_managed_plugin.Managed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", managed.docker.host)
    before = sorted((mount.root, mount.target) for mount in mount_table())
    output: dict[str, list[str]] = {}
    for step in ("step_private_bind", "step_shared_bind", "step_managed_plugin"):
        lines = output[step] = []
        lab = Lab(tmp_path / step, test_managed_plugin.PLUGIN, lines.append)
        lab.root.mkdir()
        getattr(lab, step)()
    assert sorted((mount.root, mount.target) for mount in mount_table()) == before

    private = output["step_private_bind"]
    area = tmp_path / "step_private_bind" / "private-bind"
    assert f"    the host sees: ls -A {area / 'vol'} -> (nothing)" in private
    _after(private, "    the application container sees: ls -A /data -> (nothing)",
           "the application container sees an empty directory")  # fmt: skip
    _after(private, "    the plugin container sees: cat /mnt/volumes/vol/file -> data",
           "while the plugin container sees its volume")  # fmt: skip

    shared = output["step_shared_bind"]
    area = tmp_path / "step_shared_bind" / "shared-bind"
    assert f"    the host sees: cat {area / 'vol' / 'file'} -> data" in shared
    assert "    the application container sees: ls -A /data -> file" in shared
    _after(shared, "    the application container sees: cat /data/file -> data",
           "the application container sees the volume")  # fmt: skip

    plugin = output["step_managed_plugin"]
    target = next(
        line.rsplit(" has at ", 1)[1] for line in plugin if "the filesystem the host has at" in line
    )
    assert "    the application container sees: cat /data/file -> from-the-app" in plugin
    _after(plugin, f"    the host sees: cat {target}/data/file -> from-the-app",
           "the application container writes to it, the host reads it")  # fmt: skip
    mounted = [line for line in plugin if "its /data in /proc/self/mountinfo" in line]
    assert len(mounted) == 1 and re.search(
        r"-> /dev/\S+ (ext4|xfs), device \d+:\d+, root /data$", mounted[0]
    ), plugin
    # Where findmnt lists the volume twice (the data root is shared, so the propagated
    # mount's bind is its peer and the volume is copied under both), the lab says why.
    listed = [row[1] for line in plugin if (row := FINDMNT_ROW.match(line))]
    if listed.count(target) >= 2:
        explained = [line for line in plugin if "are the same filesystem" in line]
        assert explained and "copied by propagation" in explained[0], plugin
        assert any(" is hidden: mount " in line for line in plugin), plugin
