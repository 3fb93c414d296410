"""The mount tree as an SVG picture: peer groups as colours, propagation as arrows.

It fits `max_width` (the /ui page's 1280 px window): long paths are shortened in
the middle, and each mount's full description is its tooltip (an SVG <title>).
"""

from __future__ import annotations

import textwrap
from xml.sax.saxutils import escape

from fakestor.mounts import (
    EXPLANATIONS,
    Mount,
    covered_by,
    notes,
    receivers,
    same_filesystem,
    source_text,
    walk,
)

ROW = 26
INDENT = 22
BOX_WIDTH = 520
MAX_WIDTH = 1280
ARROW_SPACE = 120  # right of the boxes, where the propagation arrows bend
CHAR = 7.3  # width of a character at 12px monospace
PRIVATE = "#d0d0d0"
LEGEND = (
    "colour = peer group (grey: private); red outline = made by fakestor; faded = hidden "
    "under another mount; 'same fs as N': the filesystem is also mount N; arrows: where a new "
    "mount under it also appears (two heads: peers). Hover a mount for the full story."
)


def group_colour(group: int | None) -> str:
    if group is None:
        return PRIVATE
    hue = (group * 137) % 360  # golden-angle steps keep neighbouring groups apart
    return f"hsl({hue}, 70%, 72%)"


def shorten(text: str, chars: int) -> str:
    """`text` in at most `chars` characters, cut in the middle (a path's end says most)."""
    if len(text) <= chars:
        return text
    if chars <= 1:
        return "…"[:chars]
    head = (chars - 1) // 3
    return text[:head] + "…" + text[len(text) - (chars - 1 - head) :]


def _details(mount: Mount, mounts: list[Mount]) -> str:
    details = f"  {mount.propagation_fields}  [mount {mount.mount_id}]"
    if mount.fakestor:
        details += f"  fakestor: {mount.fakestor}"
    twins = same_filesystem(mount, mounts)
    if twins:
        details += "  same fs as " + ", ".join(str(twin.mount_id) for twin in twins)
    return details


def _label(mount: Mount, mounts: list[Mount], chars: int) -> str:
    """The target, shortened so that the details after it still fit in `chars`."""
    details = _details(mount, mounts)
    label = shorten(mount.target, max(chars - len(details), min(len(mount.target), 24))) + details
    return label if len(label) <= chars else label[: max(chars - 1, 0)] + "…"


def _tooltip(mount: Mount, mounts: list[Mount]) -> str:
    lines = [
        f"mount {mount.mount_id} at {mount.target}",
        f"{source_text(mount)} {mount.fstype} (device {mount.device}), {mount.propagation_fields}",
    ]
    if mount.fakestor:
        lines.append(f"made by fakestor: {mount.fakestor}")
    return "\n".join(lines + notes(mount, mounts))


def render_svg(
    roots: list[Mount],
    mounts: list[Mount],
    title: str = "mount tree",
    paths: list[str] | None = None,
    max_width: int = MAX_WIDTH,
) -> str:
    rows = list(walk(roots, paths=paths))
    position = {mount.mount_id: index for index, (_, mount) in enumerate(rows)}
    deepest = max((depth for depth, _ in rows), default=0)
    natural = max(
        (d * INDENT + CHAR * len(m.target + _details(m, mounts)) + 22 for d, m in rows), default=0
    )
    box_right = min(max(BOX_WIDTH, natural), max_width - ARROW_SPACE)
    # Deep trees indent less, so the deepest box keeps two thirds of the width.
    indent = min(INDENT, box_right / 3 / max(deepest, 1))
    width = min(max_width, max(box_right + ARROW_SPACE, 980))
    columns = int((width - 20) / CHAR)
    legend = [
        line
        for text in [*EXPLANATIONS.values(), LEGEND]
        for line in textwrap.wrap(text, columns, subsequent_indent="  ")
    ]
    legend_y = 60 + ROW * len(rows)
    height = legend_y + 18 * len(legend) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'viewBox="0 0 {width:.0f} {height}" font-family="monospace" font-size="12" '
        'class="mount-tree">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='6' "
        "markerHeight='6' orient='auto-start-reverse'><path d='M 0 0 L 10 5 L 0 10 z' "
        "fill='#444'/></marker></defs>",
        f'<text x="10" y="20" font-size="14" font-weight="bold">'
        f"{escape(shorten(title, int((width - 20) / 8.5)))}</text>",
    ]
    for index, (depth, mount) in enumerate(rows):
        y = 40 + index * ROW
        x = 10 + depth * indent
        colour = group_colour(mount.shared if mount.shared is not None else mount.master)
        stroke = "#c0392b" if mount.fakestor else "#555"
        dash = (
            " stroke-dasharray='4 2'" if mount.shared is None and mount.master is not None else ""
        )
        faded = " opacity='0.55'" if covered_by(mount, mounts) else ""
        label = _label(mount, mounts, int((box_right - x - 12) / CHAR))
        parts.append(
            f'<g class="mount" data-target="{escape(mount.target)}" '
            f'data-propagation="{mount.propagation}"{faded}>'
            f"<title>{escape(_tooltip(mount, mounts))}</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{box_right - x:.1f}" height="{ROW - 6}" '
            f'rx="5" fill="{colour}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
            f'<text x="{x + 6:.1f}" y="{y + 14}">{escape(label)}</text></g>'
        )
    # Propagation arrows, drawn beside the boxes: from a shared mount to what it reaches.
    for _depth, mount in rows:
        for other in receivers(mount, mounts):
            peers = other.shared is not None and other.shared == mount.shared
            if other.mount_id not in position or (peers and mount.mount_id > other.mount_id):
                continue  # not shown, or peers already joined by one two-headed arrow
            y1 = 40 + position[mount.mount_id] * ROW + (ROW - 6) / 2
            y2 = 40 + position[other.mount_id] * ROW + (ROW - 6) / 2
            # A cubic with both control points at `bend` reaches 3/4 of the way to it.
            bend = min(box_right + 30 + abs(y2 - y1) / ROW * 3, width - 8)
            start = " marker-start='url(#arrow)'" if peers else ""
            parts.append(
                f'<path class="propagation" d="M {box_right + 4:.1f} {y1} C {bend:.1f} {y1}, '
                f'{bend:.1f} {y2}, {box_right + 4:.1f} {y2}" fill="none" stroke="#444"{start} '
                f"marker-end='url(#arrow)'/>"
            )
    parts.append(f'<text x="10" y="{legend_y}" font-weight="bold">legend</text>')
    for index, text in enumerate(legend, start=1):
        parts.append(f'<text x="10" y="{legend_y + index * 18}">{escape(text)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
