"""The NBD exports of attachments to node instances: their records (address and secrets,
kept across restarts) and opening and closing them through `Ebs.exports`."""

from __future__ import annotations

import logging
import secrets
import sqlite3

from backends import BackendError
from backends.nbd_exports import Export, free_port, kill_stale
from fakestor.control.context import Ebs
from fakestor.control.states import AttachmentState, InstanceState

log = logging.getLogger(__name__)

# Attachments whose node is served their data.
SERVED = (AttachmentState.ATTACHING, AttachmentState.ATTACHED, AttachmentState.DETACHING)


def node_address(db: sqlite3.Connection, instance_id: str) -> str | None:
    """The address the instance's node agent registered from; None: no agent, records only."""
    row = db.execute("SELECT address FROM nodes WHERE instance_id=?", (instance_id,)).fetchone()
    return None if row is None else str(row["address"])


def export_of(db: sqlite3.Connection, volume_id: str, instance_id: str) -> Export | None:
    row = db.execute(
        "SELECT * FROM exports WHERE volume_id=? AND instance_id=?", (volume_id, instance_id)
    ).fetchone()
    if row is None:
        return None
    return Export(
        row["host"], row["port"], row["export_name"], instance_id, row["psk"], bool(row["tls"])
    )


def open_export(ebs: Ebs, volume_id: str, instance_id: str) -> bool:
    """Serve the attachment's data to its node; False if it has none to serve (no agent
    registered, or a backend without data), so the attachment is a record only.

    The export keeps its port and secrets for as long as its record lasts. Raises
    BackendError if the volume's data is missing or nbdkit cannot serve it.
    """
    if ebs.exports is None:
        return False
    with ebs.store.transaction() as db:
        address = node_address(db, instance_id)
        export = export_of(db, volume_id, instance_id)
    if address is None:
        return False
    file = ebs.backend.volume_file(volume_id)
    if file is None:
        raise BackendError(f"the data of {volume_id} is missing; it cannot be exported")
    if export is None or export.host != address:
        export = Export(
            host=address,
            port=free_port(address),
            name=secrets.token_urlsafe(24),
            psk_identity=instance_id,
            psk=secrets.token_hex(32),
            tls=ebs.exports.tls,
        )
        with ebs.store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO exports(volume_id, instance_id, host, port, "
                "export_name, psk, tls) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    volume_id,
                    instance_id,
                    export.host,
                    export.port,
                    export.name,
                    export.psk,
                    int(export.tls),
                ),
            )
    pid = ebs.exports.open(volume_id, instance_id, export, file)
    with ebs.store.transaction() as db:
        db.execute(
            "UPDATE exports SET pid=? WHERE volume_id=? AND instance_id=?",
            (pid, volume_id, instance_id),
        )
    return True


def close_export(ebs: Ebs, volume_id: str, instance_id: str) -> None:
    """Close the attachment's export at once (its node's next I/O fails) and forget it."""
    if ebs.exports is not None:
        ebs.exports.close(volume_id, instance_id)
    with ebs.store.transaction() as db:
        db.execute(
            "DELETE FROM exports WHERE volume_id=? AND instance_id=?", (volume_id, instance_id)
        )


def close_instance_exports(ebs: Ebs, instance_id: str) -> None:
    """Fence a node: close every export of the instance (stop, terminate)."""
    with ebs.store.transaction() as db:
        volume_ids = [
            row[0]
            for row in db.execute(
                "SELECT volume_id FROM exports WHERE instance_id=?", (instance_id,)
            )
        ]
    for volume_id in volume_ids:
        close_export(ebs, volume_id, instance_id)


def is_exported(db: sqlite3.Connection, volume_id: str, instance_id: str) -> bool:
    return export_of(db, volume_id, instance_id) is not None


def submit_export(ebs: Ebs, volume_id: str, instance_id: str) -> None:
    """Open the attachment's export in the volume's task queue (after its create)."""

    def work() -> None:
        with ebs.store.transaction() as db:
            row = db.execute(
                "SELECT a.state, a.force_detach, i.state AS instance_state FROM attachments a "
                "JOIN instances i ON i.id = a.instance_id "
                "WHERE a.volume_id=? AND a.instance_id=?",
                (volume_id, instance_id),
            ).fetchone()
        wanted = (
            row is not None
            and row["state"] in SERVED
            and not row["force_detach"]
            and row["instance_state"] in (InstanceState.PENDING, InstanceState.RUNNING)
        )
        if not wanted:
            close_export(ebs, volume_id, instance_id)
            return
        try:
            open_export(ebs, volume_id, instance_id)
        except BackendError as failure:
            log.warning("cannot export %s to %s: %s", volume_id, instance_id, failure)

    ebs.tasks.submit([volume_id], work, f"export {volume_id} to {instance_id}")


def submit_instance_exports(ebs: Ebs, instance_id: str) -> None:
    """Export every attachment of the instance to its node (registration, start)."""
    with ebs.store.transaction() as db:
        volume_ids = [
            row[0]
            for row in db.execute(
                "SELECT volume_id FROM attachments WHERE instance_id=?", (instance_id,)
            )
        ]
    for volume_id in volume_ids:
        submit_export(ebs, volume_id, instance_id)


def resume_exports(ebs: Ebs) -> None:
    """After a start: reopen the recorded exports (same address and secrets), killing any
    nbdkit a crashed run left, and forget those whose attachment ended meanwhile."""
    with ebs.store.transaction() as db:
        rows = db.execute("SELECT volume_id, instance_id, export_name, pid FROM exports").fetchall()
    for row in rows:
        kill_stale(row["pid"], row["export_name"])
        submit_export(ebs, row["volume_id"], row["instance_id"])
