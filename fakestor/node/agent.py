"""`fakestor node`: register the node's instance, then keep its devices as the server says
(bring up the exported attachments, flush and remove the others, report each change)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from fakestor.imds_address import (
    EC2_IMDS_ADDRESS,
    ImdsAddressError,
    add_to_loopback,
    remove_from_loopback,
)
from fakestor.node.client import NodeApiError, NodeClient, launch_instance
from fakestor.node.devices import NodeDeviceError, NodeDevices
from fakestor.node.imds import imds_server, serve_in_background

log = logging.getLogger(__name__)

REGISTER_TIMEOUT = 30.0
RETRY_SECONDS = 1.0


@dataclass
class NodeConfig:
    endpoint: str
    instance_id: str | None
    data_dir: Path
    dev_root: Path = Path("/dev")
    imds_listen: tuple[str, int] | None = None
    region: str = "us-east-1"
    poll_wait: float = 10.0
    reconnect_seconds: int = 5
    ready: list[str] = field(default_factory=list)  # the ready line, for callers


class NodeStartError(Exception):
    """The agent cannot start; the message says why in one line."""


class _Stop(Exception):
    """Raised by the signal handler while the agent waits on the server."""


def preflight(devices: NodeDevices) -> None:
    if os.geteuid() != 0:
        raise NodeStartError("the node agent needs root (block devices and /dev links)")
    needed = ["nbdkit"] + (["nbd-client"] if devices.kernel_nbd else ["nbdfuse", "fusermount3"])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise NodeStartError(
            f"missing {', '.join(missing)}: install Debian's nbdkit and libnbd-bin (and fuse3)"
        )
    if not devices.kernel_nbd and not os.path.exists("/dev/loop-control"):
        raise NodeStartError("neither /dev/nbd0 nor /dev/loop-control exists on this machine")


class Agent:
    def __init__(self, config: NodeConfig, instance_id: str) -> None:
        self.config = config
        self.instance_id = instance_id
        self.client = NodeClient(config.endpoint, instance_id, config.region)
        self.devices = NodeDevices(config.data_dir, config.dev_root, config.reconnect_seconds)
        self.reported: dict[str, str] = {}  # volume id -> device reported present
        self.stopping = threading.Event()
        self.waiting = False  # in a call to the server: a signal may interrupt it

    def register(self) -> None:
        deadline = time.monotonic() + REGISTER_TIMEOUT
        while True:
            try:
                self.client.register()
                self.reported.clear()
                return
            except NodeApiError as failure:
                if failure.status or time.monotonic() > deadline:
                    raise NodeStartError(f"cannot register {self.instance_id}: {failure}") from None
            time.sleep(RETRY_SECONDS)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()
        if self.waiting:
            raise _Stop()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        etag, pending = "", False
        while not self.stopping.is_set():
            try:
                self.waiting = True
                view = self.client.attachments(1.0 if pending else self.config.poll_wait, etag)
            except NodeApiError as failure:
                if failure.status == 401:  # the server forgot us (a new data dir): again
                    self.register()
                else:
                    log.warning("polling the server: %s", failure)
                    self.stopping.wait(RETRY_SECONDS)
                continue
            except _Stop:
                break
            finally:
                self.waiting = False
            etag = view["etag"]
            pending = self.reconcile(view)

    def reconcile(self, view: dict[str, Any]) -> bool:
        """Make this node's devices what `view` says; True if something is left to do."""
        running = view["state"] in ("pending", "running")
        listed = {a["volume_id"]: a for a in view["attachments"]}
        wanted = {v: a for v, a in listed.items() if a["export"] and running}
        pending = False
        for volume_id, local in list(self.devices.devices.items()):
            attachment = wanted.get(volume_id)
            if attachment and attachment["export"]["name"] == local.export_name:
                continue
            listed_now = listed.get(volume_id)
            detaching = listed_now is not None and listed_now["state"] == "detaching"
            # Not detaching: the export was closed (forced detach, stop, terminate), so
            # the data is out of reach already and the device goes, mounted or not.
            if self.devices.release(volume_id, force=not detaching):
                log.info("released %s", volume_id)
                self.reported.pop(volume_id, None)
            else:
                pending = True  # in use: the detach waits, as EBS's does
        for volume_id, attachment in listed.items():
            if attachment["state"] == "detaching" and volume_id not in self.devices.devices:
                self._report(volume_id, False)
        for volume_id, attachment in wanted.items():
            if volume_id not in self.devices.devices:
                try:
                    device = self.devices.connect(
                        volume_id, attachment["device"], attachment["export"]
                    )
                except NodeDeviceError as failure:
                    log.warning("%s", failure)
                    pending = True
                    continue
                log.info("%s is %s here", volume_id, device)
            device = self.devices.devices[volume_id].device
            if self.reported.get(volume_id) != device:
                if self._report(volume_id, True, device):
                    self.reported[volume_id] = device
                else:
                    pending = True
        return pending

    def _report(self, volume_id: str, present: bool, device: str | None = None) -> bool:
        try:
            self.client.report(volume_id, present, device)
            return True
        except NodeApiError as failure:
            log.warning("reporting %s: %s", volume_id, failure)
            return False


def _imds(config: NodeConfig, instance_id: str) -> tuple[ThreadingHTTPServer, bool]:
    """The metadata server on --imds-listen; True if EC2's address had to be put on lo.

    Raises OSError, ImdsAddressError.
    """
    assert config.imds_listen is not None
    try:
        return imds_server(config.imds_listen, config.endpoint, instance_id), False
    except OSError as failure:
        if failure.errno != errno.EADDRNOTAVAIL or config.imds_listen[0] != EC2_IMDS_ADDRESS:
            raise
    added = add_to_loopback(EC2_IMDS_ADDRESS)
    try:
        return imds_server(config.imds_listen, config.endpoint, instance_id), added
    except OSError:
        if added:
            remove_from_loopback(EC2_IMDS_ADDRESS)
        raise


def run_node(config: NodeConfig) -> None:
    """Run the agent until SIGTERM or SIGINT, then release every device it made.

    Raises NodeStartError if it cannot start.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    probe = NodeDevices(config.data_dir, config.dev_root)
    preflight(probe)
    instance_id = config.instance_id
    if instance_id is None:
        try:
            instance_id = launch_instance(config.endpoint, config.region)
        except Exception as failure:  # botocore's errors have no common base worth naming
            raise NodeStartError(f"cannot launch an instance for this node: {failure}") from None
    agent = Agent(config, instance_id)
    try:
        agent.register()
    except NodeStartError:
        # What a previous agent left (after a kill -9) serves nothing now: release it.
        agent.devices.adopt()
        agent.devices.release_all()
        raise
    agent.devices.adopt()
    imds, added_address = None, False
    if config.imds_listen:
        try:
            imds, added_address = _imds(config, instance_id)
        except (OSError, ImdsAddressError) as failure:
            agent.devices.release_all()
            raise NodeStartError(
                f"cannot serve instance metadata on {config.imds_listen[0]}:"
                f"{config.imds_listen[1]}: {getattr(failure, 'strerror', None) or failure}"
            ) from None
        serve_in_background(imds)
    line = f"fakestor node ready: instance {instance_id} endpoint {config.endpoint}"
    config.ready.append(line)
    print(line, flush=True)
    try:
        agent.run()
    finally:
        agent.devices.release_all()
        if imds is not None:
            imds.shutdown()
            imds.server_close()
        if added_address and config.imds_listen:
            remove_from_loopback(config.imds_listen[0])
        print(f"fakestor node: stopped, devices of {instance_id} released", flush=True)
