"""The mount picture fits the /ui page's 1280 px window, however deep the tree and long the paths.

Built from a made-up mountinfo, so it needs no root and no mounts.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

from fakestor import mounts
from fakestor.mounts_svg import CHAR, MAX_WIDTH, render_svg, shorten

SVG = "{http://www.w3.org/2000/svg}"
DOCKER = "/var/lib/docker/plugins/" + "0123456789abcdef" * 4 + "/propagated-mount"


def deep_table() -> list[mounts.Mount]:
    """/ shared; a chain of 14 nested mounts with 40-character names, some shared with the
    root's group; the plugin's propagated mount bound onto itself (a peer of /), and a
    volume under it copied by propagation under / too (hidden there)."""
    lines = ["1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw"]
    parent, path = 1, ""
    for depth in range(2, 16):
        path += f"/level-{depth:02}-" + "x" * 31
        group = "shared:1" if depth % 3 == 0 else f"master:1 shared:{depth}"
        lines.append(f"{depth} {parent} 0:{depth} / {path} rw {group} - tmpfs t{depth} rw")
        parent = depth
    lines += [
        f"40 1 8:1 {DOCKER} {DOCKER} rw shared:1 - ext4 /dev/sda1 rw",
        f"41 40 7:3 / {DOCKER}/vol-0123456789abcdef0 rw shared:50 - ext4 /dev/loop3 rw",
        f"42 1 7:3 / {DOCKER}/vol-0123456789abcdef0 rw shared:50 - ext4 /dev/loop3 rw",
    ]
    return mounts.parse_mountinfo("\n".join(lines))


def _numbers(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"-?\d+(?:\.\d+)?", text)]


def test_svg_of_a_deep_tree_with_long_paths_fits_1280_px() -> None:
    table = deep_table()
    picture = render_svg(mounts.link(table), table, "mounts of process 1")
    svg = ElementTree.fromstring(picture)
    width = float(svg.attrib["width"])
    assert width <= MAX_WIDTH
    assert svg.attrib["viewBox"] == f"0 0 {svg.attrib['width']} {svg.attrib['height']}"
    for rect in svg.iter(f"{SVG}rect"):
        assert float(rect.attrib["x"]) + float(rect.attrib["width"]) <= width
    texts = list(svg.iter(f"{SVG}text"))
    assert len(texts) > 20
    for text in texts:
        size = float(text.attrib.get("font-size", 12)) / 12
        assert float(text.attrib["x"]) + CHAR * size * len(text.text or "") <= width, text.text
    arrows = [path for path in svg.iter(f"{SVG}path") if path.attrib.get("class") == "propagation"]
    assert len(arrows) >= 10
    for arrow in arrows:
        xs = _numbers(arrow.attrib["d"])[0::2]
        assert max(xs) <= width - 5, arrow.attrib["d"]  # control points, so the curve too
    # Shortened labels keep the whole path in the tooltip.
    deepest = table[14]
    group = next(g for g in svg.iter(f"{SVG}g") if g.attrib["data-target"] == deepest.target)
    label = next(group.iter(f"{SVG}text")).text or ""
    assert "…" in label and label.endswith("[mount 15]")
    title = next(group.iter(f"{SVG}title")).text or ""
    assert title.startswith(f"mount 15 at {deepest.target}\n")


def test_svg_marks_a_filesystem_seen_twice() -> None:
    table = deep_table()
    svg = ElementTree.fromstring(render_svg(mounts.link(table), table))
    groups = {g.attrib["data-target"] + g.attrib.get("opacity", ""): g for g in svg.iter(f"{SVG}g")}
    visible = groups[f"{DOCKER}/vol-0123456789abcdef0"]
    hidden = groups[f"{DOCKER}/vol-0123456789abcdef00.55"]  # faded: hidden under mount 40
    assert "same fs as 42" in (next(visible.iter(f"{SVG}text")).text or "")
    tooltip = next(hidden.iter(f"{SVG}title")).text or ""
    assert "hidden: mount 40 is mounted over " + DOCKER in tooltip
    assert "same filesystem (/dev/loop3, device 7:3, root /) as mount 41" in tooltip


def test_shorten_keeps_the_end_of_a_path() -> None:
    assert shorten("/short", 10) == "/short"
    cut = shorten("/var/lib/docker/plugins/abcdef/propagated-mount/vol-1", 30)
    assert len(cut) == 30 and cut.startswith("/var/lib/") and cut.endswith("mount/vol-1")
