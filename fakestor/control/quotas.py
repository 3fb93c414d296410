"""The account quotas fakestor enforces, with AWS's defaults (Service Quotas, `ebs`).

Pending snapshots per account (L-94D7AB7D): 100, not adjustable on AWS; here
`fakestor server --pending-snapshot-quota N` sets it, so a test can reach it. StartSnapshot
refuses a new snapshot once the region holds that many pending snapshots (those of
CreateSnapshot, CopySnapshot and StartSnapshot alike).
"""

from __future__ import annotations

import sqlite3

from fakestor.control.states import SnapshotState
from fakestor.direct_errors import ServiceQuotaExceededException

DEFAULT_PENDING_SNAPSHOT_QUOTA = 100


def check_pending_snapshots(db: sqlite3.Connection, quota: int) -> None:
    """ServiceQuotaExceededException if the account already has `quota` pending snapshots
    in this region (a region's state store holds the one account's snapshots)."""
    (pending,) = db.execute(
        "SELECT COUNT(*) FROM snapshots WHERE state=?", (str(SnapshotState.PENDING),)
    ).fetchone()
    if pending >= quota:
        # EBS documents no message for this error; this wording is fakestor's.
        raise ServiceQuotaExceededException(
            f"The account has {pending} pending snapshots, its quota of pending snapshots "
            f"({quota}); complete or delete some before starting another."
        )
