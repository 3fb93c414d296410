"""The mount tree as an SVG picture: peer groups as colours, propagation as arrows."""

from __future__ import annotations

from xml.sax.saxutils import escape

from fakestor.mounts import EXPLANATIONS, Mount, receivers, walk

ROW = 26
INDENT = 22
BOX_WIDTH = 520
PRIVATE = "#d0d0d0"


def group_colour(group: int | None) -> str:
    if group is None:
        return PRIVATE
    hue = (group * 137) % 360  # golden-angle steps keep neighbouring groups apart
    return f"hsl({hue}, 70%, 72%)"


def _label(mount: Mount) -> str:
    label = f"{mount.target}  ({mount.propagation_fields})"
    if mount.fakestor:
        label += f"  fakestor: {mount.fakestor}"
    return label


def _text_width(text: str) -> float:
    return 7.3 * len(text)  # 12px monospace


def render_svg(
    roots: list[Mount],
    mounts: list[Mount],
    title: str = "mount tree",
    paths: list[str] | None = None,
) -> str:
    rows = list(walk(roots, paths=paths))
    position = {mount.mount_id: index for index, (_, mount) in enumerate(rows)}
    labels = {mount.mount_id: _label(mount) for _, mount in rows}
    right = max((10 + d * INDENT + _text_width(labels[m.mount_id]) for d, m in rows), default=0)
    box_right = max(BOX_WIDTH, right + 12)
    arrow_x = box_right + 50
    height = 60 + ROW * len(rows) + 30 * (len(EXPLANATIONS) + 1)
    width = max(arrow_x + 120, 980)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="12" class="mount-tree">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='6' "
        "markerHeight='6' orient='auto-start-reverse'><path d='M 0 0 L 10 5 L 0 10 z' "
        "fill='#444'/></marker></defs>",
        f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for index, (depth, mount) in enumerate(rows):
        y = 40 + index * ROW
        x = 10 + depth * INDENT
        colour = group_colour(mount.shared if mount.shared is not None else mount.master)
        stroke = "#c0392b" if mount.fakestor else "#555"
        dash = (
            " stroke-dasharray='4 2'" if mount.shared is None and mount.master is not None else ""
        )
        label = labels[mount.mount_id]
        parts.append(
            f'<g class="mount" data-target="{escape(mount.target)}" '
            f'data-propagation="{mount.propagation}">'
            f'<rect x="{x}" y="{y}" width="{box_right - x}" height="{ROW - 6}" '
            f'rx="5" fill="{colour}" stroke="{stroke}" stroke-width="1.5"{dash}/>'
            f'<text x="{x + 6}" y="{y + 14}">{escape(label)}</text></g>'
        )
    # Propagation arrows, drawn beside the boxes: from a shared mount to what it reaches.
    for _depth, mount in rows:
        for other in receivers(mount, mounts):
            peers = other.shared is not None and other.shared == mount.shared
            if other.mount_id not in position or (peers and mount.mount_id > other.mount_id):
                continue  # not shown, or peers already joined by one two-headed arrow
            y1 = 40 + position[mount.mount_id] * ROW + (ROW - 6) / 2
            y2 = 40 + position[other.mount_id] * ROW + (ROW - 6) / 2
            bend = arrow_x + 20 + (abs(y2 - y1) / ROW) * 3
            start = " marker-start='url(#arrow)'" if peers else ""
            parts.append(
                f'<path class="propagation" d="M {box_right + 4} {y1} C {bend} {y1}, {bend} {y2}, '
                f'{box_right + 4} {y2}" fill="none" stroke="#444"{start} '
                f"marker-end='url(#arrow)'/>"
            )
    legend_y = 60 + ROW * len(rows)
    parts.append(f'<text x="10" y="{legend_y}" font-weight="bold">legend</text>')
    for index, text in enumerate(EXPLANATIONS.values(), start=1):
        parts.append(f'<text x="10" y="{legend_y + index * 18}">{escape(text)}</text>')
    parts.append(
        f'<text x="10" y="{legend_y + (len(EXPLANATIONS) + 1) * 18}">colour = peer group '
        "(grey: private); red outline = made by fakestor; arrows: where a new mount "
        "propagates (two heads: peers)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)
