"""Open descriptors of the chunk store's files: a bounded cache, and what a flush must sync.

A random workload over a volume touches chunks all over it; closing and reopening a
chunk file per request costs two syscalls and a path lookup each time, so descriptors
stay open, least recently used first out. A chunk written since the last flush is
"dirty": the flush syncs it before it commits any map that points at it, and a dirty
descriptor pushed out of the cache is kept aside until then, so an eviction never
stalls a writer on an fsync.

Not locked: the chunk store calls every method under its own lock.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections import OrderedDict
from pathlib import Path

CHUNK_SIZE = 512 * 1024
MIN_OPEN_CHUNKS = 256
MAX_OPEN_CHUNKS = 16384  # 8 GiB of chunks; an open file costs the kernel about 1 KiB


def open_chunk_limit() -> int:
    """How many chunk files to keep open: up to half the descriptors this process may have.

    The soft limit is raised towards the hard one for that.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * MAX_OPEN_CHUNKS + 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_CHUNKS
    return max(MIN_OPEN_CHUNKS, min(MAX_OPEN_CHUNKS, soft // 2))


class ChunkFiles:
    """The chunk files under `chunks_dir`, by chunk id, with their open descriptors."""

    def __init__(self, chunks_dir: Path) -> None:
        self.chunks_dir = chunks_dir
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._max_open = open_chunk_limit()
        self._closing: dict[int, int] = {}  # dirty descriptors pushed out of _fds
        self.dirty: set[int] = set()  # chunk ids written since the last flush
        # Chunks whose descriptor a read or write uses outside the lock: never evicted.
        self._in_use: dict[int, int] = {}

    def path(self, chunk: int) -> Path:
        return self.chunks_dir / f"{chunk % 256:02x}" / str(chunk)

    def fd(self, chunk: int, create: bool = False) -> int:
        """The chunk file's descriptor (FileNotFoundError if it is missing and not `create`)."""
        fd = self._fds.get(chunk)
        if fd is not None:
            self._fds.move_to_end(chunk)
            return fd
        fd = self._closing.pop(chunk, None)
        if fd is None:
            path = self.path(chunk)
            if create:
                path.parent.mkdir(exist_ok=True)
            flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
            fd = os.open(path, flags, 0o600)
            if create:
                # Full length (sparse): a short read is then never the end of the file,
                # which a read that must not wait cannot tell from data not cached.
                os.ftruncate(fd, CHUNK_SIZE)
        self._fds[chunk] = fd
        while len(self._fds) > self._max_open:
            old_chunk, old_fd = self._fds.popitem(last=False)
            if old_chunk in self._in_use:
                self._fds[old_chunk] = old_fd  # to the back of the queue
            elif old_chunk not in self.dirty:
                os.close(old_fd)
            elif len(self._closing) < self._max_open // 2:
                self._closing[old_chunk] = old_fd
            else:  # more dirty chunks than descriptors to spare: sync this one now
                os.fsync(old_fd)
                self.dirty.discard(old_chunk)
                os.close(old_fd)
        return fd

    def use(self, chunk: int) -> int:
        """`fd`, kept open until `done_with` (for I/O outside the store's lock)."""
        fd = self.fd(chunk)
        self._in_use[chunk] = self._in_use.get(chunk, 0) + 1
        return fd

    def done_with(self, chunks: list[int], dirty: bool = False) -> None:
        for chunk in chunks:
            count = self._in_use.pop(chunk) - 1
            if count:
                self._in_use[chunk] = count
        if dirty:
            self.dirty.update(chunks)

    def forget(self, chunk: int) -> None:
        """Close the chunk's descriptor, if open, and drop it from the dirty set."""
        for fds in (self._fds, self._closing):
            fd = fds.pop(chunk, None)
            if fd is not None:
                os.close(fd)
        self.dirty.discard(chunk)

    def take_dirty(self) -> tuple[set[int], list[int]]:
        """The dirty chunks, and descriptors to sync them by (the caller closes them).

        Open ones are duplicated: an eviction may close the cached descriptors meanwhile.
        """
        dirty, self.dirty = self.dirty, set()
        closing, self._closing = self._closing, {}
        fds = [os.dup(self._fds[chunk]) for chunk in dirty if chunk in self._fds]
        return dirty, fds + list(closing.values())

    def keep_dirty(self, dirty: set[int]) -> None:
        """Chunks a failed flush took: the next flush syncs the ones still open."""
        self.dirty |= dirty & set(self._fds)

    def close(self) -> None:
        for fd in [*self._fds.values(), *self._closing.values()]:
            os.close(fd)
        self._fds.clear()
        self._closing.clear()
