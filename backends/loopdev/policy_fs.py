"""The loopdev backend's policy layer: a pyfuse3 filesystem that serves each volume's image
as a file whose I/O first meets the volume's faults and performance model, then pread/pwrite.

A loop device bound to `<mountpoint>/<vol-id>` instead of `volumes/<vol-id>.img` sees the
same bytes; the layer adds what the kernel reading the image directly cannot: faults
(backends.fuse.faults.IoFaults, shared with the fuse backend) and EBS's limits
(backends.performance.Shaper). Writes are pwrite into the image before they are
acknowledged and fsync passes through, so the layer loses nothing the image would keep.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pyfuse3
import trio

from backends.fuse.faults import IoFaults
from backends.fuse_mount import FuseMount
from backends.io_faults import READ, WRITE
from backends.loopdev.lazy import LazyImages
from backends.performance import Shaper

log = logging.getLogger(__name__)

T = TypeVar("T")


class PolicyFilesystem(pyfuse3.Operations):
    """One file per volume image of `images_dir` (`<name><suffix>` served as `<name>`)."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, images_dir: Path, suffix: str) -> None:
        super().__init__()
        self.images_dir = images_dir
        self.suffix = suffix
        self._inodes: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._next_inode = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._handles: dict[int, tuple[str, int]] = {}  # fh -> (volume, image fd)
        self._next_handle = itertools.count(1)
        self._lock = threading.Lock()
        self.shapers: dict[str, Shaper] = {}
        self.faults = IoFaults()
        self._nowait_kinds = {READ, WRITE}
        self.lazy: LazyImages | None = None

    def image_of(self, name: str) -> Path:
        return self.images_dir / f"{name}{self.suffix}"

    def inode_of(self, name: str) -> int:
        with self._lock:
            inode = self._inodes.get(name)
            if inode is None:
                inode = next(self._next_inode)
                self._inodes[name] = inode
                self._names[inode] = name
            return inode

    def _name(self, inode: int) -> str:
        with self._lock:
            name = self._names.get(inode)
        if name is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return name

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as failure:
            raise pyfuse3.FUSEError(failure.errno or errno.EIO) from None

    async def _run(self, work: Callable[[], T]) -> T:
        with self._errors():
            return await trio.to_thread.run_sync(work)

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        attributes = pyfuse3.EntryAttributes()
        attributes.st_ino = inode
        attributes.entry_timeout = 0
        attributes.attr_timeout = 0  # sizes change on ModifyVolume: always ask
        if inode == pyfuse3.ROOT_INODE:
            attributes.st_mode = stat.S_IFDIR | 0o755
            attributes.st_nlink = 2
            return attributes
        with self._errors():
            image = os.stat(self.image_of(self._name(inode)))
        attributes.st_mode = stat.S_IFREG | 0o600
        attributes.st_nlink = 1
        attributes.st_size = image.st_size
        attributes.st_blksize = 4096
        attributes.st_blocks = image.st_blocks
        return attributes

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        decoded = name.decode(errors="replace")
        if parent_inode != pyfuse3.ROOT_INODE or "/" in decoded or decoded.startswith("."):
            raise pyfuse3.FUSEError(errno.ENOENT)
        if not self.image_of(decoded).is_file():
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(self.inode_of(decoded))

    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return self._attributes(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        current = self._attributes(inode)
        if fields.update_size and attr.st_size != current.st_size:
            raise pyfuse3.FUSEError(errno.EPERM)  # volumes change size through ModifyVolume
        return current

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        names = sorted(
            path.name.removesuffix(self.suffix)
            for path in self.images_dir.glob(f"*{self.suffix}")
            if path.is_file()
        )
        for position, name in enumerate(names[start_id:], start=start_id + 1):
            inode = self.inode_of(name)
            try:
                attributes = self._attributes(inode)
            except pyfuse3.FUSEError:
                continue  # deleted meanwhile
            if not pyfuse3.readdir_reply(token, name.encode(), attributes, position):
                break

    async def releasedir(self, fh: int) -> None:
        pass

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        name = self._name(inode)
        with self._errors():
            fd = os.open(self.image_of(name), os.O_RDWR | os.O_CLOEXEC)
        handle = next(self._next_handle)
        self._handles[handle] = (name, fd)
        # Direct I/O: the image's own page cache holds the data, not a second one here.
        return pyfuse3.FileInfo(fh=handle, direct_io=True, keep_cache=False)

    def _handle(self, fh: int) -> tuple[str, int]:
        found = self._handles.get(fh)
        if found is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return found

    async def _policy(self, name: str, operation: str, offset: int, size: int) -> None:
        """What the volume's model and faults make this I/O meet before it is served."""
        shaper = self.shapers.get(name)
        if shaper is not None:
            delay = shaper.delay(size)
            if delay > 0:
                await trio.sleep(delay)
        await self.faults.check(name, operation, offset, size)

    def _nowait(self, work: Callable[[], int], kind: str) -> int:
        """Run `work` (a RWF_NOWAIT read or write) in the event loop; -1 if it would block."""
        try:
            return work()
        except BlockingIOError:
            return -1
        except OSError as failure:
            if failure.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                # This filesystem cannot (ext4 has no RWF_NOWAIT buffered writes): this
                # kind of I/O goes to worker threads from now on.
                self._nowait_kinds.discard(kind)
                return -1
            raise pyfuse3.FUSEError(failure.errno or errno.EIO) from None

    async def read(self, fh: int, off: int, size: int) -> bytes:
        name, fd = self._handle(fh)
        await self._policy(name, READ, off, size)
        lazy = self.lazy.get(name) if self.lazy is not None else None
        if lazy is not None:  # blocks not restored yet are read from the snapshot
            return await self._run(lambda: lazy.read(fd, off, size))
        # Data in the page cache is read in the event loop (RWF_NOWAIT fails rather than
        # wait for the disk): a worker thread per I/O would halve the layer's IOPS.
        if READ in self._nowait_kinds:
            buffer = bytearray(size)
            if self._nowait(lambda: os.preadv(fd, [buffer], off, os.RWF_NOWAIT), READ) == size:
                return bytes(buffer)
        return await self._run(lambda: os.pread(fd, size, off))

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        name, fd = self._handle(fh)
        await self._policy(name, WRITE, off, len(buf))
        lazy = self.lazy.get(name) if self.lazy is not None else None
        if lazy is not None:  # blocks not restored yet are copied first
            return await self._run(lambda: lazy.write(fd, off, buf))
        done = 0
        if WRITE in self._nowait_kinds:
            done = max(0, self._nowait(lambda: os.pwritev(fd, [buf], off, os.RWF_NOWAIT), WRITE))
            if done == len(buf):
                return done
        rest = memoryview(buf)[done:]
        return done + await self._run(lambda: os.pwrite(fd, rest, off + done))

    async def flush(self, fh: int) -> None:
        pass  # each write is in the image already; fsync makes it durable

    async def fsync(self, fh: int, datasync: bool) -> None:
        _, fd = self._handle(fh)
        await self._run(lambda: os.fdatasync(fd) if datasync else os.fsync(fd))

    async def release(self, fh: int) -> None:
        found = self._handles.pop(fh, None)
        if found is not None:
            os.close(found[1])

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        host = os.statvfs(self.images_dir)
        data.f_bsize = data.f_frsize = host.f_frsize
        data.f_blocks, data.f_bfree, data.f_bavail = host.f_blocks, host.f_bfree, host.f_bavail
        data.f_files = data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data

    def close_all(self) -> None:
        for _, fd in self._handles.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._handles.clear()


class PolicyMount(FuseMount):
    """The policy filesystem mounted at `mountpoint`, served by trio in its own thread."""

    operations: PolicyFilesystem

    def __init__(self, images_dir: Path, suffix: str, mountpoint: Path) -> None:
        super().__init__(
            PolicyFilesystem(images_dir, suffix), mountpoint, what="the policy layer",
            fsname="fakestor-policy", subtype="fakestor-policy", thread_name="fakestor-policy",
        )  # fmt: skip

    def stop(self) -> None:
        super().stop()
        self.operations.close_all()
