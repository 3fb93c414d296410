"""Node agents (`fakestor node`): registration with a per-instance token, what each node is
to serve (its instance's attachments and their exports), and the devices it reports."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fakestor import errors
from fakestor.control import exports
from fakestor.control.attachments import drop_attachment
from fakestor.control.context import Ebs
from fakestor.control.loaders import get_instance
from fakestor.control.resources import to_text, utcnow
from fakestor.control.states import AttachmentState, InstanceState
from fakestor.control.volumes import clear_failure

GIB = 1024**3


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register_node(ebs: Ebs, instance_id: str, address: str) -> str:
    """Register the agent of `instance_id`, reached at `address`; returns its new token.

    A new registration replaces the last one's token. Raises InvalidInstanceID.NotFound,
    OperationNotPermitted (the host), IncorrectInstanceState (terminated).
    """
    token = secrets.token_urlsafe(32)
    now = to_text(utcnow())
    with ebs.store.transaction() as db:
        instance = get_instance(db, instance_id)
        if instance.is_host:
            raise errors.OperationNotPermitted(
                f"The instance '{instance_id}' is the machine fakestor runs on; its volumes "
                "are attached by the server itself."
            )
        if instance.state in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED):
            raise errors.IncorrectInstanceState(
                f"The instance '{instance_id}' is not in a state from which it can run a node."
            )
        db.execute(
            "INSERT OR REPLACE INTO nodes(instance_id, token_hash, address, registered_at, "
            "last_seen) VALUES (?, ?, ?, ?, ?)",
            (instance_id, _hash(token), address, now, now),
        )
    exports.submit_instance_exports(ebs, instance_id)
    return token


def authenticated(ebs: Ebs, instance_id: str, token: str) -> bool:
    """Whether `token` is the one the instance's agent was last given; notes it was seen."""
    with ebs.store.transaction() as db:
        row = db.execute(
            "SELECT token_hash FROM nodes WHERE instance_id=?", (instance_id,)
        ).fetchone()
        if row is None or not hmac.compare_digest(row["token_hash"], _hash(token)):
            return False
        db.execute(
            "UPDATE nodes SET last_seen=? WHERE instance_id=?", (to_text(utcnow()), instance_id)
        )
    return True


def node_view(ebs: Ebs, instance_id: str) -> dict[str, Any]:
    """What the node is to serve: its instance's state and attachments, each with its
    export while the node may reach it. The agent brings up the exported ones and
    releases every other device it has."""
    with ebs.store.transaction() as db:
        instance = get_instance(db, instance_id)
        rows = db.execute(
            "SELECT a.volume_id, a.device, a.state, a.force_detach, v.size FROM attachments a "
            "JOIN volumes v ON v.id = a.volume_id WHERE a.instance_id=? ORDER BY a.volume_id",
            (instance_id,),
        ).fetchall()
        found = {row["volume_id"]: exports.export_of(db, row["volume_id"], instance_id)
                 for row in rows}  # fmt: skip
    attachments = []
    for row in rows:
        export = found[row["volume_id"]]
        served = (
            export is not None
            and ebs.exports is not None
            and ebs.exports.is_open(row["volume_id"], instance_id)
            and row["state"] != AttachmentState.DETACHING
        )
        attachments.append(
            {
                "volume_id": row["volume_id"],
                "device": row["device"],
                "state": row["state"],
                "size_bytes": row["size"] * GIB,
                "export": None
                if not served or export is None
                else {
                    "host": export.host,
                    "port": export.port,
                    "name": export.name,
                    "psk_identity": export.psk_identity,
                    "psk": export.psk,
                    "tls": export.tls,
                },
            }
        )
    return {
        "instance_id": instance.id,
        "state": instance.state,
        "zone": instance.zone,
        "attachments": attachments,
    }


def report_device(
    ebs: Ebs, instance_id: str, volume_id: str, present: bool, device_path: str | None
) -> str:
    """The node has the attachment's device (`present`) or has flushed and removed it;
    returns the attachment's state after the report ("detached" if it has ended).

    A device present turns an attaching attachment 'attached'; one removed ends a
    detaching attachment and closes its export. Other reports change nothing.
    """
    with ebs.store.transaction() as db:
        get_instance(db, instance_id)
        row = db.execute(
            "SELECT state FROM attachments WHERE volume_id=? AND instance_id=?",
            (volume_id, instance_id),
        ).fetchone()
        if row is None:
            return AttachmentState.DETACHED
        state = AttachmentState(row["state"])
        if present and state in (AttachmentState.ATTACHING, AttachmentState.ATTACHED):
            db.execute(
                f"UPDATE attachments SET state='{AttachmentState.ATTACHED}', device_path=? "
                "WHERE volume_id=? AND instance_id=?",
                (device_path, volume_id, instance_id),
            )
            clear_failure(db, volume_id)
            return AttachmentState.ATTACHED
    if present or state != AttachmentState.DETACHING:
        return state
    exports.close_export(ebs, volume_id, instance_id)
    with ebs.store.transaction() as db:
        still = db.execute(
            "SELECT state FROM attachments WHERE volume_id=? AND instance_id=?",
            (volume_id, instance_id),
        ).fetchone()
        if still is not None and still["state"] == AttachmentState.DETACHING:
            drop_attachment(db, volume_id, instance_id)
            clear_failure(db, volume_id)
    return AttachmentState.DETACHED
