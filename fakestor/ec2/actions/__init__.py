"""EC2 actions: read the parsed parameters, call the control plane, shape the result.

Each handler takes the control plane and the operation's input (botocore member
names as keys) and returns the output as a dict of the same kind; importing the
modules below registers them in ACTIONS.
"""

from fakestor.ec2.actions import (
    account,
    fast_snapshot_restores,
    images,
    instance_types,
    instances,
    recycle_bin,
    snapshot_locks,
    snapshot_tiers,
    snapshots,
    volumes,
)
from fakestor.ec2.actions.common import ACTIONS, Handler

__all__ = [
    "ACTIONS",
    "Handler",
    "account",
    "fast_snapshot_restores",
    "images",
    "instance_types",
    "instances",
    "recycle_bin",
    "snapshot_locks",
    "snapshot_tiers",
    "snapshots",
    "volumes",
]
