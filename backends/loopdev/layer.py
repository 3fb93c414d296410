"""When and how a loopdev volume goes through the policy layer (policy_fs.py): the layer's
mount (made on first need, or at start with `--loopdev-policy always`), its loop devices,
and the faults and performance limits it applies, kept for every volume attached or not.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from backends import BackendError, BackingStoreMissing
from backends.devices import LoopDevices
from backends.io_faults import IoFault
from backends.performance import Shaper, VolumeShape
from fakestor.mounts import is_mounted

if TYPE_CHECKING:
    from backends.loopdev.lazy import LazyImages
    from backends.loopdev.policy_fs import PolicyMount

log = logging.getLogger(__name__)

POLICIES = ("when-needed", "always")


class PolicyLayer:
    """The policy layer of the images `images_dir/<vol-id><suffix>`, mounted at
    `<layer_dir>/mnt` (one file per volume there) while any volume needs it."""

    def __init__(
        self, images_dir: Path, suffix: str, layer_dir: Path, dev_dir: Path, *, always: bool
    ) -> None:
        self.images_dir = images_dir
        self.suffix = suffix
        self.mountpoint = layer_dir / "mnt"
        self.always = always
        self.devices = LoopDevices(self.mountpoint, dev_dir=dev_dir)
        self.mount: PolicyMount | None = None
        self.shapers: dict[str, Shaper] = {}
        self.faults: dict[str, IoFault] = {}
        self._rebind: set[str] = set()  # went through the layer before a crash: again
        self.lazy: LazyImages | None = None  # images restored lazily (lazy.py), read through

    # ---- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Undo what a killed server left (devices on its dead mount, the mount), and
        remember which volumes went through it, so their relink goes through it again."""
        stale = self.devices.bound()
        self._rebind = {volume_id for volume_id, _ in stale}
        if stale:
            self.devices.release_all("left bound to the previous run's policy layer")
        if is_mounted(self.mountpoint):
            log.warning("unmounting the previous run's policy layer at %s", self.mountpoint)
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        if self.always:
            self._mounted()

    def close(self) -> None:
        """Release the layer's devices (they cannot outlive it) and unmount it."""
        if self.mount is None:
            return
        self.mount.operations.faults.close()  # I/O held by an impaired volume fails now
        self.devices.release_all("as the policy layer stops")
        self.mount.stop()
        self.mount = None

    def _mounted(self) -> PolicyMount:
        if self.mount is not None and self.mount.running:
            return self.mount
        try:
            from backends.loopdev.policy_fs import PolicyMount
        except ImportError as missing:
            raise BackendError(
                f"the loopdev policy layer (faults, performance model) needs pyfuse3 and "
                f"trio ({missing}); install fakestor[fuse]"
            ) from None
        if not os.path.exists("/dev/fuse"):
            raise BackendError(
                "the loopdev policy layer (faults, performance model) needs /dev/fuse: "
                "load the fuse module (modprobe fuse)"
            )
        mount = PolicyMount(self.images_dir, self.suffix, self.mountpoint)
        mount.operations.shapers = self.shapers
        mount.operations.lazy = self.lazy
        for volume_id, fault in self.faults.items():
            mount.operations.faults.set(volume_id, fault)
        try:
            mount.start()
        except RuntimeError as failure:
            raise BackendError(str(failure)) from None
        log.debug("policy layer mounted at %s", self.mountpoint)
        self.mount = mount
        return mount

    # ---- devices ------------------------------------------------------------

    def holds(self, volume_id: str) -> bool:
        """Whether the volume's device is bound through the layer."""
        return bool(self.devices.bound_to(volume_id))

    def wanted(self, volume_id: str) -> bool:
        """Whether an attach of the volume should go through the layer."""
        return (
            self.always
            or volume_id in self.shapers
            or volume_id in self.faults
            or volume_id in self._rebind
        )

    def attach(self, volume_id: str, device_name: str) -> str:
        """Bind the volume's layer file to a loop device. Raises BackingStoreMissing,
        NoFreeDevice, BackendError (no layer)."""
        image = self.images_dir / f"{volume_id}{self.suffix}"
        if not image.exists():
            raise BackingStoreMissing(f"the data of {volume_id} is missing ({image})")
        self._mounted()
        self._rebind.discard(volume_id)
        return self.devices.attach(volume_id, device_name)

    def detach(self, volume_id: str, force: bool) -> None:
        if force and self.mount is not None:
            self.mount.operations.faults.release_waiting(volume_id)
        self.devices.detach(volume_id, force)

    def refresh_size(self, volume_id: str) -> None:
        """Make the kernel read a grown image's size before the layer's device takes it on."""
        if self.holds(volume_id):
            os.stat(self.devices.file_of(volume_id))  # attributes are never cached

    # ---- policy -------------------------------------------------------------

    def set_performance(self, volume_id: str, shape: VolumeShape | None, scale: float) -> None:
        if shape is None:
            self.shapers.pop(volume_id, None)
        elif volume_id in self.shapers:
            self.shapers[volume_id].reshape(shape)
        else:
            self.shapers[volume_id] = Shaper(shape, scale)

    def burst_balance(self, volume_id: str) -> float | None:
        shaper = self.shapers.get(volume_id)
        return shaper.burst_balance() if shaper is not None else None

    def set_io_fault(self, volume_id: str, fault: IoFault | None) -> None:
        if fault is None:
            self.faults.pop(volume_id, None)
        else:
            self.faults[volume_id] = fault
        if self.mount is not None:
            self.mount.operations.faults.set(volume_id, fault)
