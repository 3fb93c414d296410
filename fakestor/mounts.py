"""The mount tree and its propagation, read from /proc/<pid>/mountinfo.

For each mount: its propagation (shared:N, master:N, private, unbindable), its
peer group, the mounts a new mount under it would propagate to, following the
kernel's shared-subtree rules (Documentation/filesystems/sharedsubtree.rst), and
why a filesystem is seen at more than one mount point.
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


def reach(mount: Mount, mounts: Iterable[Mount]) -> list[tuple[Mount, str]]:
    """receivers(), each with how it gets the new mount: "peer" (same peer group) or "slave"."""
    return [
        (other, "peer" if mount.shared is not None and other.shared == mount.shared else "slave")
        for other in receivers(mount, mounts)
    ]


def covered_by(mount: Mount, mounts: Iterable[Mount]) -> Mount | None:
    """The mount that hides `mount` from path lookup, if one does (it stays in the table).

    A mount is hidden when another one sits on top of it at the same path, when a
    sibling is mounted over a directory on its path, or when its parent is hidden.
    Propagation makes such mounts: a copy under a mount that a bind covers.
    """
    by_id = {other.mount_id: other for other in mounts}
    chain = [mount]
    while (parent := by_id.get(chain[-1].parent_id)) is not None and parent not in chain:
        chain.append(parent)
    for below, above in zip(chain, [*chain[1:], None], strict=True):
        for other in by_id.values():
            if other in chain:
                continue
            if other.parent_id == below.mount_id and other.target == below.target:
                return other  # mounted on top of it
            over = below.target.startswith(other.target.rstrip("/") + "/")
            if above is not None and other.parent_id == above.mount_id and over:
                return other  # mounted over a directory on its path
    return None


def same_filesystem(mount: Mount, mounts: Iterable[Mount]) -> list[Mount]:
    """The other mounts of the same filesystem and directory in it (device and root)."""
    return [
        other
        for other in mounts
        if other is not mount and other.device == mount.device and other.root == mount.root
    ]


def sources(mount: Mount, mounts: Iterable[Mount]) -> list[int]:
    """The peer groups whose new mounts reach `mount`, nearest first: its own, its master,
    and the masters of that group's members (a shared slave passes on what it receives)."""
    everyone = list(mounts)
    groups: list[int] = []
    pending = [group for group in (mount.shared, mount.master) if group is not None]
    while pending:
        group = pending.pop(0)
        if group not in groups:
            groups.append(group)
            pending += [m.master for m in everyone if m.shared == group and m.master is not None]
    return groups


def _both_reached(a: Mount, b: Mount, mounts: list[Mount]) -> str | None:
    """How one peer group's new mounts reach both `a` and `b`, if one does."""
    theirs = sources(b, mounts)
    group = next((group for group in sources(a, mounts) if group in theirs), None)
    if group is None:
        return None
    if a.shared == b.shared == group:
        return (
            f"{a.mount_id} ({a.target}) and {b.mount_id} ({b.target}) are peers in group "
            f"{group}, so a mount made under either appears under both"
        )
    return (
        f"{a.mount_id} ({a.target}, {a.propagation_fields}) and {b.mount_id} ({b.target}, "
        f"{b.propagation_fields}) both receive the new mounts of peer group {group}"
    )


def why_same_filesystem(mount: Mount, other: Mount, mounts: list[Mount]) -> str:
    """Why `other` shows the same filesystem as `mount`: one mount copied by propagation
    (their parents both receive it), or a bind mount."""
    by_id = {m.mount_id: m for m in mounts}
    here, there = by_id.get(mount.parent_id), by_id.get(other.parent_id)
    if here is not None and there is not None and here is not there:
        parents = _both_reached(here, there, mounts)
        if parents:
            return f"the same mount copied by propagation: their parent mounts {parents}"
    mounts_themselves = _both_reached(mount, other, mounts)
    if mounts_themselves:
        return f"a bind mount: mounts {mounts_themselves}"
    return (
        "mounted twice (a private bind mount, or the same filesystem mounted again): "
        "a mount made under one does not appear under the other"
    )


def source_text(mount: Mount) -> str:
    """The source as findmnt writes it: with the directory shown in brackets for a bind."""
    return mount.source if mount.root == "/" else f"{mount.source}[{mount.root}]"


def _at(mount: Mount, mounts: list[Mount], how: str = "") -> str:
    hidden = "hidden" if covered_by(mount, mounts) else ""
    remarks = ", ".join(remark for remark in (how, hidden) if remark)
    return f"mount {mount.mount_id} at {mount.target}" + (f" ({remarks})" if remarks else "")


def reach_text(mount: Mount, mounts: list[Mount], limit: int | None = None) -> str | None:
    """One sentence: where a new mount under `mount` also appears (None: nowhere else)."""
    spread = reach(mount, mounts)
    if not spread:
        return None
    shown = spread if limit is None else spread[:limit]
    places = ", ".join(_at(other, mounts, how) for other, how in shown)
    if len(shown) < len(spread):
        places += f" and {len(spread) - len(shown)} more"
    points = "mount point" if len(spread) == 1 else "mount points"
    return f"a new mount under it also appears under {len(spread)} other {points}: {places}"


def notes(mount: Mount, mounts: list[Mount], limit: int | None = None) -> list[str]:
    """What a reader of the table needs told about `mount`: where new mounts under it also
    appear, whether it is hidden, and why its filesystem is seen at other mount points."""
    spread = reach_text(mount, mounts, limit)
    found = [spread] if spread else []
    cover = covered_by(mount, mounts)
    if cover is not None:
        how = "on top of it" if cover.target == mount.target else f"over {cover.target}"
        found.append(
            f"hidden: mount {cover.mount_id} is mounted {how}, so no path leads to this mount "
            "(it is still in the mount table)"
        )
    for other in same_filesystem(mount, mounts):
        found.append(
            f"same filesystem ({mount.source}, device {mount.device}, root {mount.root}) as "
            f"{_at(other, mounts)}: {why_same_filesystem(mount, other, mounts)}"
        )
    return found


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
    cover = covered_by(mount, mounts)
    return {
        "id": mount.mount_id,
        "parent": mount.parent_id,
        "target": mount.target,
        "source": mount.source,
        "fstype": mount.fstype,
        "device": mount.device,
        "root": mount.root,
        "propagation": mount.propagation,
        "peer_group": mount.shared,
        "master": mount.master,
        "propagates_to": [other.target for other in receivers(mount, mounts)],
        "new_mounts_also_appear_under": [
            {"id": other.mount_id, "target": other.target, "as": how}
            for other, how in reach(mount, mounts)
        ],
        "hidden_by": cover.mount_id if cover else None,
        "same_filesystem_as": [
            {
                "id": other.mount_id,
                "target": other.target,
                "hidden": covered_by(other, mounts) is not None,
                "why": why_same_filesystem(mount, other, mounts),
            }
            for other in same_filesystem(mount, mounts)
        ],
        "notes": notes(mount, mounts),
        "fakestor": mount.fakestor,
        "children": [describe(child, mounts, paths) for child in children],
    }


def render_text(roots: list[Mount], mounts: list[Mount], paths: list[str] | None = None) -> str:
    lines = []
    shown = list(walk(roots, paths=paths))
    for depth, mount in shown:
        marker = f"  [fakestor: {mount.fakestor}]" if mount.fakestor else ""
        indent = "  " * depth
        lines.append(
            f"{indent}{mount.target}  {source_text(mount)} {mount.fstype}  "
            f"{mount.propagation_fields}  [mount {mount.mount_id}]{marker}"
        )
        lines += [f"{indent}    {note}" for note in notes(mount, mounts, limit=3)]
    used = {m.propagation for _, m in shown}
    lines.append("")
    lines += [EXPLANATIONS[kind] for kind in EXPLANATIONS if kind in used]
    return "\n".join(lines)
