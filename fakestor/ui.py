"""`/ui`: a live page of volumes, their attachments and devices, and the mount tree picture."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response, jsonify

from fakestor import mounts
from fakestor.control import Ebs, snapshots, volumes
from fakestor.device_names import by_id_path
from fakestor.faults_api import active_faults
from fakestor.mounts_svg import render_svg

UI_PREFIX = "/ui"  # every path the UI serves starts with this

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fakestor</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.4em; margin-bottom: 0.2em; }
  .meta { color: #666; margin-bottom: 1em; }
  table { border-collapse: collapse; margin-bottom: 1.5em; }
  th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 0.9em; }
  th { background: #f0f0f0; }
  td.state-available { color: #1e7e34; } td.state-in-use { color: #0b5ed7; }
  td.state-error { color: #c0392b; font-weight: bold; }
  code { font-size: 0.9em; }
  /* Ids and states stay on one line; the long device path is the column that wraps. */
  #volumes td { white-space: nowrap; }
  #volumes td:last-child { white-space: normal; overflow-wrap: anywhere; min-width: 16em; }
  #mounts { border: 1px solid #ddd; padding: 0.5em; overflow: auto; }
  /* The picture is drawn at most 1280 px wide; scaled down to the window if narrower. */
  #mounts svg { display: block; max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>fakestor</h1>
<div class="meta" id="meta">loading...</div>
<h2>Volumes</h2>
<table id="volumes">
  <thead><tr><th>volume</th><th>name</th><th>size</th><th>type</th><th>state</th>
  <th>attached to</th><th>device</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Faults</h2>
<p class="meta">Set with <code>fakestor fault set</code> or tags
<code>fakestor:fault/NAME</code> on a volume; see the README's Faults section.</p>
<table id="faults">
  <thead><tr><th>on</th><th>fault</th><th>value</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Mount tree</h2>
<p>Peer groups are colours; arrows show where a new mount under a mount also appears; red
outlines are fakestor's own mounts; faded ones are hidden under another mount. Hover a mount
for its full path and why its filesystem may be seen twice.</p>
<div id="mounts"></div>
<script>
async function refresh() {
  const state = await (await fetch("/ui/state.json")).json();
  document.getElementById("meta").textContent =
    `backend ${state.backend} - host instance ${state.host_instance_id} in ${state.zone} - ` +
    `${state.volumes.length} volume(s), ${state.snapshots} snapshot(s) - updated ` +
    new Date().toLocaleTimeString();
  const body = document.querySelector("#volumes tbody");
  body.replaceChildren(...state.volumes.map(v => {
    const row = document.createElement("tr");
    row.className = "volume";
    const cells = [v.id, v.name, v.size + " GiB", v.type, v.state, v.attached_to, v.device];
    cells.forEach((text, i) => {
      const cell = document.createElement("td");
      cell.textContent = text || "";
      if (i === 4) cell.className = "state-" + v.state;
      row.appendChild(cell);
    });
    return row;
  }));
  const faults = document.querySelector("#faults tbody");
  const active = [
    ...state.faults.server.map(f => [f.scope, f.name, f.value]),
    ...state.faults.tags.map(f => [f.resource_id, f.name, f.value]),
  ];
  faults.replaceChildren(...(active.length ? active : [["none", "", ""]]).map(cells => {
    const row = document.createElement("tr");
    row.className = "fault";
    cells.forEach(text => {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    });
    return row;
  }));
  const svg = await (await fetch("/ui/mounts.svg")).text();
  document.getElementById("mounts").innerHTML = svg;
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""


def _device_of(volume_id: str, recorded: str | None) -> str:
    link = str(by_id_path(volume_id))
    if os.path.islink(link):
        return f"{link} → {os.path.realpath(link)}"
    return recorded or ""


def ui_blueprint(ebs: Ebs) -> Blueprint:
    blueprint = Blueprint("ui", __name__)

    @blueprint.route("/ui")
    def page() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @blueprint.route("/ui/state.json")
    def state() -> Response:
        rows: list[dict[str, Any]] = []
        for volume in sorted(volumes.describe_volumes(ebs), key=lambda v: v.create_time):
            attachment = volume.attachments[0] if volume.attachments else None
            rows.append(
                {
                    "id": volume.id,
                    "name": volume.tags.get("Name", ""),
                    "size": volume.size,
                    "type": volume.volume_type,
                    "state": volume.state,
                    "attached_to": ", ".join(
                        f"{a.instance_id} as {a.device} ({a.state})" for a in volume.attachments
                    ),
                    "device": _device_of(volume.id, attachment.device_path)
                    if attachment and attachment.instance_id == ebs.host_instance_id
                    else "",
                }
            )
        return jsonify(
            {
                "backend": ebs.backend.name,
                "host_instance_id": ebs.host_instance_id,
                "zone": ebs.region.zones[0],
                "volumes": rows,
                "snapshots": len(snapshots.describe_snapshots(ebs)),
                "faults": active_faults(ebs),
            }
        )

    @blueprint.route("/ui/mounts.svg")
    def mount_tree() -> Response:
        found = mounts.read_mounts()
        # The mounts fakestor made, with the chain of mounts that hold them.
        paths = [m.target for m in found if m.fakestor]
        roots = mounts.select(found, paths)
        svg = render_svg(roots, found, "mounts fakestor made, and what holds them", paths or ["/"])
        return Response(svg, content_type="image/svg+xml")

    return blueprint
