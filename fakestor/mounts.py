"""The mount tree and its propagation, read from /proc/<pid>/mountinfo.

For each mount: its propagation (shared:N, master:N, private, unbindable), its
peer group, and the mounts a new mount under it would propagate to, following
the kernel's shared-subtree rules (Documentation/filesystems/sharedsubtree.rst).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

EXPLANATIONS = {
    "shared": "shared:N - mounts and unmounts under it propagate to and from its peer group N",
    "private,slave": "master:N - receives mounts from peer group N, sends none back",
    "shared,slave": "shared:N master:M - receives from group M and propagates to its peers N",
    "private": "private - neither sends nor receives mount events",
    "private,unbindable": "unbindable - private, and cannot be bind-mounted",
}

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field_text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\040 and the like."""
    return _OCTAL.sub(lambda match: chr(int(match.group(1), 8)), field_text)


@dataclass
class Mount:
    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str
    target: str
    options: str
    fstype: str
    source: str
    shared: int | None = None  # peer group
    master: int | None = None
    propagate_from: int | None = None
    unbindable: bool = False
    children: list[Mount] = field(default_factory=list, repr=False)
    fakestor: str | None = None  # what fakestor made it for, if it did

    @property
    def propagation(self) -> str:
        if self.unbindable:
            return "private,unbindable"  # as findmnt names it
        if self.shared is not None and self.master is not None:
            return "shared,slave"
        if self.shared is not None:
            return "shared"
        if self.master is not None:
            return "private,slave"
        return "private"

    @property
    def propagation_fields(self) -> str:
        """As findmnt and mountinfo write it: shared:N master:M, or private."""
        parts = []
        if self.shared is not None:
            parts.append(f"shared:{self.shared}")
        if self.master is not None:
            parts.append(f"master:{self.master}")
        if self.unbindable:
            parts.append("unbindable")
        return " ".join(parts) or "private"


def parse_mountinfo(text: str) -> list[Mount]:
    """Every mount of a mountinfo file, in file order."""
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, source, *_ = [*right.split(), ""]
        mount = Mount(
            mount_id=int(fields[0]),
            parent_id=int(fields[1]),
            device=fields[2],
            root=_unescape(fields[3]),
            target=_unescape(fields[4]),
            options=fields[5],
            fstype=fstype,
            source=_unescape(source),
        )
        for optional in fields[6:]:
            tag, _, value = optional.partition(":")
            if tag == "shared":
                mount.shared = int(value)
            elif tag == "master":
                mount.master = int(value)
            elif tag == "propagate_from":
                mount.propagate_from = int(value)
            elif tag == "unbindable":
                mount.unbindable = True
        mounts.append(mount)
    return mounts


def mount_table(pid: int | str = "self") -> list[Mount]:
    """The mounts process `pid` sees, in mount order: parsed only, no tree, no marks."""
    return parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())


def read_mounts(pid: int | str = "self") -> list[Mount]:
    """The mounts process `pid` sees, linked into a tree and marked where fakestor made them."""
    mounts = mount_table(pid)
    link(mounts)
    mark_fakestor(mounts)
    return mounts


def mount_points(device: str) -> list[str]:
    """Where the block device `device` is mounted, as this process's mount namespace sees it."""
    rdev = os.stat(device).st_rdev
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    return [mount.target for mount in mount_table() if mount.device == wanted]


def is_mounted(path: Path | str) -> bool:
    """Whether something is mounted at `path` here, even a dead FUSE mount that cannot be
    stat'ed (where os.path.ismount fails)."""
    target = str(path)
    return any(mount.target == target for mount in mount_table())


def link(mounts: list[Mount]) -> list[Mount]:
    """Fill in children; returns the roots (mounts whose parent is not in the list)."""
    by_id = {mount.mount_id: mount for mount in mounts}
    roots = []
    for mount in mounts:
        mount.children = []
    for mount in mounts:
        parent = by_id.get(mount.parent_id)
        if parent is None or parent is mount:
            roots.append(mount)
        else:
            parent.children.append(mount)
    return roots


def mark_fakestor(mounts: Iterable[Mount]) -> None:
    """Note which mounts fakestor made: its FUSE store, plugin mounts, volume mounts."""
    for mount in mounts:
        if mount.fstype == "fuse.fakestor":
            mount.fakestor = "block store (FUSE)"
        elif "/plugins/" in mount.target and mount.target.endswith("/propagated-mount"):
            mount.fakestor = "plugin propagatedMount"
        elif (
            "/propagated-mount/" in mount.target
            or "fakestor-plugin" in mount.target
            or (mount.source.startswith("/dev/loop") and _backed_by_fakestor(mount.source))
        ):
            mount.fakestor = "volume"


def _backed_by_fakestor(device: str) -> bool:
    backing = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
    try:
        text = backing.read_text()
    except OSError:
        return False
    return "/volumes/" in text and ("vol-" in text)


def receivers(mount: Mount, mounts: Iterable[Mount]) -> list[Mount]:
    """The other mounts a new mount under `mount` would also appear under.

    A mount event on a shared mount reaches every peer in its group, and every
    slave of that group; a slave that is itself shared passes it on to its own
    peers and slaves.
    """
    everyone = list(mounts)
    if mount.shared is None:
        return []
    reached: list[Mount] = []
    seen_groups: set[int] = set()
    pending = [mount.shared]
    while pending:
        group = pending.pop()
        if group in seen_groups:
            continue
        seen_groups.add(group)
        for other in everyone:
            if other is mount or other in reached:
                continue
            if other.shared == group or other.master == group:
                reached.append(other)
                if other.shared is not None:
                    pending.append(other.shared)
    return reached


def _related(target: str, paths: list[str]) -> bool:
    """Whether a mount at `target` holds, or lies under, one of `paths`."""
    return any(
        target == path
        or target.startswith(path.rstrip("/") + "/")
        or path.startswith(target.rstrip("/") + "/")
        for path in paths
    )


def walk(
    roots: Iterable[Mount], depth: int = 0, paths: list[str] | None = None
) -> Iterator[tuple[int, Mount]]:
    """Mounts depth first; with `paths`, only those holding or under one of them."""
    for mount in roots:
        yield depth, mount
        children = mount.children
        if paths:
            children = [child for child in children if _related(child.target, paths)]
        yield from walk(children, depth + 1, paths)


def select(mounts: list[Mount], paths: Iterable[str]) -> list[Mount]:
    """The roots of the tree to show: the namespace's root mounts (walk filters by path)."""
    ids = {m.mount_id for m in mounts}
    return [m for m in mounts if m.parent_id not in ids or m.parent_id == m.mount_id]


def describe(
    mount: Mount, mounts: list[Mount], paths: list[str] | None = None
) -> dict[str, object]:
    children = [c for c in mount.children if not paths or _related(c.target, paths)]
    return {
        "id": mount.mount_id,
        "parent": mount.parent_id,
        "target": mount.target,
        "source": mount.source,
        "fstype": mount.fstype,
        "propagation": mount.propagation,
        "peer_group": mount.shared,
        "master": mount.master,
        "propagates_to": [other.target for other in receivers(mount, mounts)],
        "fakestor": mount.fakestor,
        "children": [describe(child, mounts, paths) for child in children],
    }


def render_text(roots: list[Mount], mounts: list[Mount], paths: list[str] | None = None) -> str:
    lines = []
    shown = list(walk(roots, paths=paths))
    for depth, mount in shown:
        marker = f"  [fakestor: {mount.fakestor}]" if mount.fakestor else ""
        spread = receivers(mount, mounts)
        reach = (
            f"  -> propagates to {len(spread)}: "
            + ", ".join(o.target for o in spread[:3])
            + (" ..." if len(spread) > 3 else "")
            if spread
            else ""
        )
        lines.append(
            f"{'  ' * depth}{mount.target}  {mount.source} {mount.fstype}  "
            f"{mount.propagation_fields}{marker}{reach}"
        )
    used = {m.propagation for _, m in shown}
    lines.append("")
    lines += [EXPLANATIONS[kind] for kind in EXPLANATIONS if kind in used]
    return "\n".join(lines)
