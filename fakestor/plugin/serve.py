"""`fakestor plugin`: serve the volume driver on a Unix socket for dockerd."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import waitress.server
from botocore.config import Config

from fakestor.plugin.api import create_plugin_app
from fakestor.plugin.driver import Defaults, PluginError, VolumeDriver
from fakestor.plugin.host import is_mount_point
from fakestor.plugin.imds import Identity, ImdsError, read_identity
from fakestor.plugin.state import MountState
from fakestor.serving import run_until_signalled

log = logging.getLogger(__name__)


class PluginStartError(Exception):
    """The plugin cannot start; the message says why in one line."""


@dataclass
class PluginConfig:
    socket_path: Path
    endpoint: str
    mount_root: Path
    state_dir: Path
    imds_endpoint: str
    defaults: Defaults


def ec2_client(endpoint: str, region: str) -> Any:
    """boto3's EC2 client; without configured credentials, fakestor's placeholder ones."""
    key_id = secret = None
    if not os.environ.get("AWS_ACCESS_KEY_ID") and not os.environ.get("AWS_PROFILE"):
        key_id = secret = "fakestor"
    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
    )


def _claim_socket(path: Path) -> None:
    """Remove a socket left by a plugin that died; refuse one that still answers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise PluginStartError(f"another plugin is serving on {path}; stop it first")
    finally:
        probe.close()


def _release_vanished_mounts(driver: VolumeDriver) -> None:
    """Mounts recorded but gone (a reboot, a manual umount) will never be Unmounted:
    detach their volumes so other instances can use them, and forget them."""
    for name, record in list(driver.state.mounts.items()):
        if is_mount_point(Path(record.mountpoint)):
            continue
        log.warning("%s: %s is no longer mounted; releasing it", name, record.mountpoint)
        try:
            driver.release(name, record.volume_id)
        except PluginError as failure:
            log.warning("%s: cannot release: %s; forgetting it", name, failure)
            driver.state.drop(name)


def run_plugin(config: PluginConfig) -> None:
    try:
        identity: Identity = read_identity(config.imds_endpoint)
    except ImdsError as failure:
        raise PluginStartError(str(failure)) from None
    try:
        state = MountState(config.state_dir / "mounts.json")
    except (OSError, ValueError) as failure:
        raise PluginStartError(f"cannot use state dir {config.state_dir}: {failure}") from None
    config.mount_root.mkdir(parents=True, exist_ok=True)
    driver = VolumeDriver(
        ec2_client(config.endpoint, identity.region),
        identity,
        config.mount_root,
        state,
        config.defaults,
    )
    try:
        _release_vanished_mounts(driver)
    except OSError as failure:
        raise PluginStartError(f"cannot use state dir {config.state_dir}: {failure}") from None
    _claim_socket(config.socket_path)
    server = waitress.server.create_server(
        create_plugin_app(driver),
        unix_socket=str(config.socket_path),
        unix_socket_perms="660",
        threads=8,
        ident="fakestor-plugin",
    )
    print(
        f"fakestor plugin: serving {config.socket_path} for instance {identity.instance_id} "
        f"in {identity.zone} (EBS at {config.endpoint}, mounts under {config.mount_root})",
        flush=True,
    )
    try:
        run_until_signalled(server)
    finally:
        config.socket_path.unlink(missing_ok=True)
        print("fakestor plugin: stopped", file=sys.stderr, flush=True)
