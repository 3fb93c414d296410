"""The chunk store as a filesystem: volumes/<vol-id> and read-only snapshots/<snap-id>.

A pyfuse3 filesystem on trio. Handlers raise only FUSEError. Reads and writes
that cannot wait long (data in the page cache, chunks already the image's own)
are served in the event loop; other chunk store work (disk reads, copies on
write, fsync) runs in worker threads. Files are served with direct I/O, so the
kernel keeps no second copy of the data in its page cache.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pyfuse3
import trio

from backends.fuse.chunks import ChunkStore, ChunkStoreError, ChunkStoreFull, NoSuchImage
from backends.fuse.faults import IoFaults
from backends.fuse_mount import FuseMount
from backends.io_faults import READ, WRITE
from backends.performance import Shaper

log = logging.getLogger(__name__)

T = TypeVar("T")

VOLUMES_INODE = pyfuse3.ROOT_INODE + 1
SNAPSHOTS_INODE = pyfuse3.ROOT_INODE + 2
DIRECTORIES = {b"volumes": VOLUMES_INODE, b"snapshots": SNAPSHOTS_INODE}


class BlockFilesystem(pyfuse3.Operations):
    """Serves each image of a ChunkStore as a regular file of the image's size."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, chunk_store: ChunkStore) -> None:
        super().__init__()
        self.chunk_store = chunk_store
        self._inodes: dict[str, int] = {}  # image name -> inode
        self._names: dict[int, str] = {}
        self._next_inode = SNAPSHOTS_INODE + 1
        self._lock = threading.Lock()
        self.largest_write = 0
        self.shapers: dict[str, Shaper] = {}  # image -> EBS performance model, if on
        self.faults = IoFaults()  # the backend's, once it is started

    def inode_of(self, name: str) -> int:
        with self._lock:
            inode = self._inodes.get(name)
            if inode is None:
                inode = self._next_inode
                self._next_inode += 1
                self._inodes[name] = inode
                self._names[inode] = name
            return inode

    def _name(self, inode: int) -> str:
        with self._lock:
            name = self._names.get(inode)
        if name is None or name not in self.chunk_store.images:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return name

    async def _run(self, work: Callable[[], T]) -> T:
        with self._errors():
            return await trio.to_thread.run_sync(work)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Chunk store failures as the errno a FUSE request answers with."""
        try:
            yield
        except NoSuchImage:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except ChunkStoreFull:
            raise pyfuse3.FUSEError(errno.ENOSPC) from None
        except ChunkStoreError as failure:
            log.warning("block store: %s", failure)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as failure:
            log.warning("block store I/O error: %s", failure)
            raise pyfuse3.FUSEError(failure.errno or errno.EIO) from None

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        attributes = pyfuse3.EntryAttributes()
        attributes.st_ino = inode
        attributes.st_uid = 0
        attributes.st_gid = 0
        attributes.entry_timeout = 1
        attributes.attr_timeout = 0  # sizes change on resize: always ask
        if inode in (pyfuse3.ROOT_INODE, VOLUMES_INODE, SNAPSHOTS_INODE):
            attributes.st_mode = stat.S_IFDIR | 0o755
            attributes.st_nlink = 2
            return attributes
        image = self.chunk_store.image(self._name(inode))
        attributes.st_mode = stat.S_IFREG | (0o400 if image.read_only else 0o600)
        attributes.st_nlink = 1
        attributes.st_size = image.size
        attributes.st_blksize = 512 * 1024
        attributes.st_blocks = len(image.chunks) * (512 * 1024 // 512)
        return attributes

    def _children(self, inode: int) -> list[str]:
        prefix = "vol-" if inode == VOLUMES_INODE else "snap-"
        return sorted(name for name in list(self.chunk_store.images) if name.startswith(prefix))

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if parent_inode == pyfuse3.ROOT_INODE and name in DIRECTORIES:
            return self._attributes(DIRECTORIES[name])
        if parent_inode in (VOLUMES_INODE, SNAPSHOTS_INODE):
            decoded = name.decode(errors="replace")
            if decoded in self._children(parent_inode):
                return self._attributes(self.inode_of(decoded))
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        try:
            return self._attributes(inode)
        except NoSuchImage:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if fields.update_size and attr.st_size != self.chunk_store.image(self._name(inode)).size:
            # Volumes change size through ModifyVolume only.
            raise pyfuse3.FUSEError(errno.EPERM)
        return self._attributes(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in (pyfuse3.ROOT_INODE, VOLUMES_INODE, SNAPSHOTS_INODE):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if fh == pyfuse3.ROOT_INODE:
            entries = [(name, inode) for name, inode in DIRECTORIES.items()]
        else:
            entries = [(name.encode(), self.inode_of(name)) for name in self._children(fh)]
        for position, (name, inode) in enumerate(entries[start_id:], start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self._attributes(inode), position):
                break

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        image = self.chunk_store.image(self._name(inode))
        if image.read_only and flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def _shape(self, name: str, size: int) -> None:
        """Wait as long as the volume's EBS performance model says this I/O must."""
        shaper = self.shapers.get(name)
        if shaper is not None:
            delay = shaper.delay(size)
            if delay > 0:
                await trio.sleep(delay)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        name = self._name(fh)
        await self._shape(name, size)
        await self.faults.check(name, READ, off, size)
        with self._errors():
            data = self.chunk_store.read_nowait(name, off, size)
        if data is not None:
            return data  # type: ignore[return-value]  # pyfuse3 replies with any buffer
        return await self._run(lambda: self.chunk_store.read(name, off, size))

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        name = self._name(fh)
        await self._shape(name, len(buf))
        await self.faults.check(name, WRITE, off, len(buf))
        self.largest_write = max(self.largest_write, len(buf))
        with self._errors():
            written = self.chunk_store.write_nowait(name, off, buf)
        if written is not None:
            return written
        return await self._run(lambda: self.chunk_store.write(name, off, buf))

    async def flush(self, fh: int) -> None:
        await self._run(self.chunk_store.flush)

    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._run(self.chunk_store.flush)

    async def release(self, fh: int) -> None:
        pass

    async def releasedir(self, fh: int) -> None:
        pass

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        host = os.statvfs(self.chunk_store.root)
        data.f_bsize = data.f_frsize = host.f_frsize
        data.f_blocks, data.f_bfree, data.f_bavail = host.f_blocks, host.f_bfree, host.f_bavail
        data.f_files = data.f_ffree = data.f_favail = 0
        data.f_namemax = 255
        return data


class MountedFilesystem(FuseMount):
    """The block store's filesystem mounted at `mountpoint`, served in its own thread."""

    operations: BlockFilesystem

    def __init__(self, chunk_store: ChunkStore, mountpoint: Path) -> None:
        super().__init__(
            BlockFilesystem(chunk_store), mountpoint, what="the block store",
            fsname="fakestor-blockstore", subtype="fakestor", thread_name="fakestor-fuse",
        )  # fmt: skip
        self.chunk_store = chunk_store

    def invalidate(self, name: str) -> None:
        """Make the kernel forget cached attributes (the size) of `name`'s file."""
        if self._token is None:
            return
        inode = self.operations.inode_of(name)

        def invalidate() -> None:
            # OSError: the kernel has not seen the inode yet, so nothing is cached.
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(inode, attr_only=True)

        trio.from_thread.run_sync(invalidate, trio_token=self._token)

    def stop(self) -> None:
        log.info("block store served requests of up to %d bytes", self.operations.largest_write)
        super().stop()
