"""`fakestor server`: assemble store, backend and control plane, serve them with waitress."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

import waitress.server
from flask import Flask

from backends import BackendError, load_backend
from backends.nbd_exports import NbdExports
from fakestor import ids
from fakestor.app import MAX_REQUEST_BYTES, create_app
from fakestor.control import performance_model, reconcile
from fakestor.control.lifecycle_clock import DEFAULT_TIME_SCALE
from fakestor.control.quotas import DEFAULT_PENDING_SNAPSHOT_QUOTA
from fakestor.control.regions import Regions
from fakestor.control.resources import Region
from fakestor.control.volume_metrics import Sampler
from fakestor.imds_address import (
    IMDS_PORT,
    ImdsAddressError,
    add_to_loopback,
    remove_from_loopback,
)
from fakestor.serving import bound_port, create_server, run_until_signalled
from fakestor.throttling import Throttle

log = logging.getLogger("fakestor")

DEFAULT_PORT = 8773  # the port of the EC2 API of Eucalyptus and OpenStack Nova


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/fakestor")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "fakestor"


def host_instance_id() -> str:
    """A stable instance id for this machine, from its machine-id."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            seed = Path(path).read_text().strip()
        except OSError:
            continue
        if seed:
            return ids.stable_id(ids.INSTANCE, seed)
    return ids.stable_id(ids.INSTANCE, socket.gethostname())


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    backend: str = "auto"
    region: Region = field(default_factory=Region)
    latency: float = 0.0
    time_scale: float = DEFAULT_TIME_SCALE
    deny: list[str] = field(default_factory=list)
    imds_tokens_required: bool = False
    imds_address: str | None = None  # also serve on ADDRESS:80, added to lo (EC2's IMDS)
    node_tls: bool = False  # the nodes' NBD exports require TLS-PSK too
    credentials: dict[str, str] | None = None  # access key id -> secret: verify SigV4
    request_rates: list[str] = field(default_factory=list)  # throttling.parse_rate specs
    pending_snapshot_quota: int = DEFAULT_PENDING_SNAPSHOT_QUOTA
    performance_model: bool = False  # EBS's IOPS and throughput limits on the data path
    credit_time_scale: float = 1.0  # burst buckets this many times smaller than EBS's
    loopdev_policy: str = "when-needed"  # or "always": every loopdev attach via its layer
    threads: int = 8
    metrics_interval: float = 60.0  # seconds between CloudWatch datapoints (EBS: 60)


class ServeError(Exception):
    """The server cannot start; the message says why in one line."""


def _take_data_dir(data_dir: Path) -> int:
    """Create the data dir if needed and lock it for this server's lifetime.

    Taken before anything else touches the data dir: a second server on the same
    dir is refused here, having changed nothing.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as failure:
        raise ServeError(f"cannot use data dir {data_dir}: {failure.strerror or failure}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ServeError(
            f"another fakestor server is using {data_dir}; stop it or choose another --data-dir"
        ) from None
    return fd


def _create_server(
    app: Flask, config: ServerConfig
) -> waitress.server.BaseWSGIServer | waitress.server.MultiSocketServer:
    listen = [(config.host, config.port)]
    if config.imds_address:
        listen.append((config.imds_address, IMDS_PORT))
    try:
        # Flask answers bodies over MAX_REQUEST_BYTES with EC2's XML error; far larger
        # ones waitress refuses before reading them, instead of buffering up to 1 GiB.
        return create_server(app, listen, config.threads, max_body=8 * MAX_REQUEST_BYTES)
    except (OSError, ValueError) as failure:
        reason = failure.strerror if isinstance(failure, OSError) else None
        where = " and ".join(f"{host}:{port}" for host, port in listen)
        raise ServeError(f"cannot serve on {where}: {reason or failure}") from None


def serve(config: ServerConfig) -> None:
    """Run the server until SIGTERM or SIGINT, then stop cleanly.

    Raises ServeError or backends.BackendError if it cannot start; whatever it had
    opened by then (lock, state store, backend mounts) is closed again.
    """
    backend = load_backend(
        config.backend, config.data_dir, latency=config.latency,
        loopdev_policy=config.loopdev_policy,
    )  # fmt: skip
    backend.preflight()
    with contextlib.ExitStack() as opened:
        opened.callback(os.close, _take_data_dir(config.data_dir))
        try:
            regions = Regions(
                config.data_dir,
                backend,
                config.region,
                host_instance_id(),
                time_scale=config.time_scale,
                pending_snapshot_quota=config.pending_snapshot_quota,
                performance_model=config.performance_model,
                credit_time_scale=config.credit_time_scale,
            )
            opened.callback(regions.close)
            contexts = regions.with_records()
        except (OSError, sqlite3.Error) as failure:
            raise ServeError(f"cannot use data dir {config.data_dir}: {failure}") from None
        ebs = regions.home
        opened.callback(backend.close)  # close() also undoes a start() that failed half-way
        backend.start()
        if backend.name != "metadata":  # attachments to node instances get NBD exports
            ebs.exports = NbdExports(config.data_dir / "exports", tls=config.node_tls)
            opened.callback(ebs.exports.close_all)  # after the tasks stop, before the backend
        opened.callback(regions.tasks.shutdown)  # before the backend closes
        sampler = Sampler(regions.with_records, config.metrics_interval)
        sampler.start()
        opened.callback(sampler.stop)
        app = create_app(
            regions,
            deny=config.deny,
            imds_tokens_required=config.imds_tokens_required,
            credentials=config.credentials,
            throttle=Throttle.from_specs(config.request_rates),
        )
        if config.imds_address:
            try:
                if add_to_loopback(config.imds_address):
                    opened.callback(remove_from_loopback, config.imds_address)
            except ImdsAddressError as failure:
                raise ServeError(str(failure)) from None
        server = _create_server(app, config)
        port = bound_port(server)
        # Only now, with the port ours, resume what a previous run left unfinished.
        reconcile.resume(*contexts)
        for context in contexts:
            performance_model.apply_all(context)
        try:
            regions.start(contexts)
        except BackendError as failure:
            raise ServeError(f"cannot make the built-in image's root snapshot: {failure}") from None
        print(
            f"fakestor: serving EC2 and instance metadata on http://{config.host}:"
            f"{port} (backend {backend.name}, data dir "
            f"{config.data_dir}, host instance {ebs.host_instance_id} in "
            f"{config.region.zones[0]})",
            flush=True,
        )
        if config.credentials:
            print(
                f"fakestor: API requests must be signed (SigV4) with one of "
                f"{len(config.credentials)} access key(s); instance metadata is not signed",
                flush=True,
            )
        if config.imds_address:
            print(
                f"fakestor: instance metadata of {ebs.host_instance_id} also at "
                f"http://{config.imds_address}/latest/meta-data/",
                flush=True,
            )
        try:
            run_until_signalled(server)
        finally:
            opened.close()
            print("fakestor: stopped", file=sys.stderr, flush=True)
