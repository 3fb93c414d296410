"""The EBS control plane: one module per resource (volumes, attachments, modifications,
snapshots, instances, tags, account), over the shared context `Ebs`; no HTTP, no wire."""

from fakestor.control.context import Ebs

__all__ = ["Ebs"]
