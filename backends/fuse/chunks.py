"""The chunk store: volumes and snapshots as maps over shared copy-on-write chunks.

Each volume or snapshot (an "image") maps chunk index -> chunk id; a chunk is a
512 KiB file under chunks/ with a reference count. Unwritten chunks read as
zeros and take no space. A snapshot copies the map and counts references; a
later write to a shared chunk copies it first, unless the write leaves the
chunk's bytes as they are (then the chunk stays shared, and unchanged).

Crash safety. Chunk data is written in place with pwrite; map and reference
changes are kept in memory and committed to SQLite by `flush`, which first
fsyncs every chunk file written since the last flush (outside the store's lock,
so writers go on meanwhile; one flush at a time, so a flush returns only once
everything written before it began is durable). So after a crash (even
kill -9) an image reads back every write that a flush (fsync, or the periodic
commit of map changes) acknowledged: a map change is never durable before the
data it points at; data rewritten in place lives in the page cache, which a
killed server leaves behind. A chunk written but never committed is an orphan file: garbage once its
writer is gone, which only the owner of the data dir (the server holding its
lock, or `fakestor check --repair` on a stopped server) may decide and remove.
A missing chunk file is damage: nothing repairs it, and reads of it fail.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from backends.fuse.chunk_files import CHUNK_SIZE, ChunkFiles

log = logging.getLogger(__name__)

ZEROS = bytes(CHUNK_SIZE)

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    read_only INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS maps (
    image TEXT NOT NULL,
    idx INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    PRIMARY KEY (image, idx)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    refs INTEGER NOT NULL
);
"""


class ChunkStoreError(Exception):
    """A chunk store operation failed; the message says what and why."""


class NoSuchImage(ChunkStoreError):
    pass


class ChunkStoreFull(ChunkStoreError):
    pass


class ChunkLost(ChunkStoreError):
    """A chunk an image maps is missing from chunks/: that range of the image is lost."""


@dataclass
class Image:
    name: str
    size: int
    read_only: bool
    chunks: dict[int, int] = field(default_factory=dict)  # index -> chunk id
    lock: threading.RLock = field(default_factory=threading.RLock)


class ChunkStore:
    """Images (volumes, snapshots) over reference-counted chunk files, thread-safe."""

    def __init__(self, root: Path) -> None:
        """Open the chunk store at `root`; the caller must own the data dir (hold its lock)."""
        self.root = root
        self.chunks_dir = root / "chunks"
        self.chunks_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            root / "blocks.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        self._lock = threading.RLock()  # guards refs, pending, ids, fds, images dict
        self._flushing = threading.Lock()  # one flush at a time
        self.images: dict[str, Image] = {}
        self.refs: dict[int, int] = {}
        for name, size, read_only in self._db.execute("SELECT name, size, read_only FROM images"):
            self.images[name] = Image(name, size, bool(read_only))
        for image_name, index, chunk in self._db.execute("SELECT image, idx, chunk FROM maps"):
            self.images[image_name].chunks[index] = chunk
        for chunk, refs in self._db.execute("SELECT id, refs FROM chunks"):
            self.refs[chunk] = refs
        self._next_id = max(self.refs, default=0) + 1
        self._files = ChunkFiles(self.chunks_dir)
        # Changes to commit at the next flush: map entries and reference counts.
        self._map_changes: dict[tuple[str, int], int | None] = {}
        self._ref_changes: set[int] = set()
        self._image_changes: dict[str, Image | None] = {}

    # ---- chunk files --------------------------------------------------------------

    def chunk_path(self, chunk: int) -> Path:
        return self._files.path(chunk)

    def _fd(self, chunk: int, create: bool = False) -> int:
        with self._lock:
            return self._files.fd(chunk, create)

    def _existing_fd(self, name: str, index: int, chunk: int) -> int:
        try:
            return self._fd(chunk)
        except FileNotFoundError:
            raise ChunkLost(
                f"{name}: chunk {chunk} (bytes {index * CHUNK_SIZE} to "
                f"{(index + 1) * CHUNK_SIZE - 1}) is missing from the block store"
            ) from None

    def _new_chunk(self, copy_of: int | None) -> int:
        with self._lock:
            chunk = self._next_id
            self._next_id += 1
            fd = self._fd(chunk, create=True)
            if copy_of is not None:
                source = self._fd(copy_of)
                data = os.pread(source, CHUNK_SIZE, 0)
                if data:
                    os.pwrite(fd, data, 0)
            self.refs[chunk] = 1
            self._ref_changes.add(chunk)
            self._files.dirty.add(chunk)
            return chunk

    def _unref(self, chunk: int) -> None:
        with self._lock:
            self.refs[chunk] -= 1
            self._ref_changes.add(chunk)

    # ---- images ----------------------------------------------------------------------

    def image(self, name: str) -> Image:
        with self._lock:
            try:
                return self.images[name]
            except KeyError:
                raise NoSuchImage(f"no image {name} in the block store") from None

    def create(self, name: str, size: int, source: str | None = None) -> Image:
        """A new image of `size` bytes, sharing every chunk of `source` if given (O(chunks))."""
        origin = self.image(source) if source is not None else None
        # Lock order everywhere: an image's lock before the chunk store's.
        with origin.lock if origin is not None else contextlib.nullcontext(), self._lock:
            if name in self.images:
                return self.images[name]
            image = Image(name, size, read_only=name.startswith("snap-"))
            if origin is not None:
                last = (size + CHUNK_SIZE - 1) // CHUNK_SIZE
                for index, chunk in origin.chunks.items():
                    if index < last:
                        image.chunks[index] = chunk
                        self.refs[chunk] += 1
                        self._ref_changes.add(chunk)
                        self._map_changes[(name, index)] = chunk
            self.images[name] = image
            self._image_changes[name] = image
        self.flush()
        return image

    def resize(self, name: str, size: int) -> None:
        image = self.image(name)
        with image.lock, self._lock:
            if size < image.size:
                raise ChunkStoreError(f"{name} cannot shrink from {image.size} to {size} bytes")
            image.size = size
            self._image_changes[name] = image
        self.flush()

    def delete(self, name: str) -> None:
        with self._lock:
            image = self.images.get(name)
        if image is None:
            return
        with image.lock, self._lock:
            self.images.pop(name, None)
            for index, chunk in image.chunks.items():
                self._unref(chunk)
                self._map_changes[(name, index)] = None
            image.chunks.clear()
            self._image_changes[name] = None
        self.flush()

    # ---- I/O ------------------------------------------------------------------------
    #
    # `nowait` is for the caller serving requests from an event loop: None instead of
    # waiting for a lock, for data not in the page cache, or for a chunk to be created
    # or copied; the caller then does the same call in a worker thread. An in-place
    # write into the page cache is taken as not waiting long.

    def read(self, name: str, offset: int, length: int) -> bytes:
        data = self._read(name, offset, length, nowait=False)
        assert isinstance(data, bytes)
        return data

    def read_nowait(self, name: str, offset: int, length: int) -> bytes | bytearray | None:
        """`read`, or None if it would wait (see above)."""
        return self._read(name, offset, length, nowait=True)

    def write(self, name: str, offset: int, data: bytes) -> int:
        written = self._write(name, offset, data, nowait=False)
        assert written is not None
        return written

    def write_nowait(self, name: str, offset: int, data: bytes) -> int | None:
        """`write`, or None if it would wait (see above)."""
        return self._write(name, offset, data, nowait=True)

    def _read(self, name: str, offset: int, length: int, nowait: bool) -> bytes | bytearray | None:
        image = self.image(name)
        if not image.lock.acquire(blocking=not nowait):
            return None
        try:
            end = min(offset + length, image.size)
            if offset >= end:
                return b""
            if (offset + length - 1) // CHUNK_SIZE == offset // CHUNK_SIZE:
                return self._read_piece(image, offset, end - offset, nowait)  # one chunk
            data = bytearray(end - offset)
            view = memoryview(data)
            position = offset
            while position < end:
                take = min(CHUNK_SIZE - position % CHUNK_SIZE, end - position)
                if not self._read_into(image, position, view[position - offset :][:take], nowait):
                    return None
                position += take
            return bytes(data)
        finally:
            image.lock.release()

    def _read_piece(
        self, image: Image, offset: int, length: int, nowait: bool
    ) -> bytes | bytearray | None:
        """`length` bytes at `offset`, all in one chunk."""
        index, within = divmod(offset, CHUNK_SIZE)
        chunk = image.chunks.get(index)
        if chunk is None:
            return ZEROS[:length]
        fd = self._use_fd(image, index, chunk, nowait)
        if fd is None:
            return None
        try:
            if nowait:
                buffer = bytearray(length)  # FUSE replies take any buffer: no copy to bytes
                return buffer if self._read_nowait(fd, buffer, within) else None
            data = os.pread(fd, length, within)
            return data + ZEROS[: length - len(data)]  # a short file (of an older store): zeros
        finally:
            self._done_with([chunk])

    def _read_into(self, image: Image, offset: int, target: memoryview, nowait: bool) -> bool:
        """Fill `target` from `offset`, all in one chunk; False if that would wait."""
        index, within = divmod(offset, CHUNK_SIZE)
        chunk = image.chunks.get(index)
        if chunk is None:
            return True  # target starts zeroed
        fd = self._use_fd(image, index, chunk, nowait)
        if fd is None:
            return False
        try:
            if nowait:
                return self._read_nowait(fd, target, within)
            os.preadv(fd, [target], within)  # a short file (of an older store) leaves zeros
            return True
        finally:
            self._done_with([chunk])

    @staticmethod
    def _read_nowait(fd: int, target: bytearray | memoryview, offset: int) -> bool:
        try:
            # Short: part of it is not cached (chunk files are full length).
            return os.preadv(fd, [target], offset, os.RWF_NOWAIT) == len(target)
        except BlockingIOError:
            return False

    def _use_fd(self, image: Image, index: int, chunk: int, nowait: bool) -> int | None:
        """The chunk's descriptor, kept open until `_done_with`; None if that would wait."""
        if not self._lock.acquire(blocking=not nowait):
            return None
        try:
            self._existing_fd(image.name, index, chunk)  # ChunkLost if its file is missing
            return self._files.use(chunk)
        finally:
            self._lock.release()

    def _done_with(self, chunks: list[int], dirty: bool = False) -> None:
        with self._lock:
            self._files.done_with(chunks, dirty)

    def _write(self, name: str, offset: int, data: bytes, nowait: bool) -> int | None:
        image = self.image(name)
        if image.read_only:
            raise ChunkStoreError(f"{name} is read-only")
        if not image.lock.acquire(blocking=not nowait):
            return None
        try:
            if offset + len(data) > image.size:
                raise ChunkStoreError(
                    f"write past the end of {name} ({offset + len(data)} > {image.size})"
                )
            pieces: list[tuple[int, int, int, int, int]] = []
            try:
                view = memoryview(data)
                if not self._pieces(image, offset, view, nowait, pieces):
                    return None
                for _, fd, within, start, take in pieces:
                    os.pwrite(fd, view[start : start + take], within)
            except OSError as failure:
                if failure.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ChunkStoreFull("no space left in the data dir") from failure
                raise
            finally:
                self._done_with([piece[0] for piece in pieces], dirty=True)
            return len(data)
        finally:
            image.lock.release()

    def _pieces(
        self,
        image: Image,
        offset: int,
        data: memoryview,
        nowait: bool,
        pieces: list[tuple[int, int, int, int, int]],
    ) -> bool:
        """Fill `pieces` with (chunk, its descriptor in use, offset in it, offset in the
        data, length) for a write, making each chunk writable (own, not shared) first.
        A piece a shared chunk already holds exactly is left out.

        With `nowait`, False if a chunk would have to be created or copied first.
        """
        position = 0
        while position < len(data):
            index, within = divmod(offset + position, CHUNK_SIZE)
            take = min(CHUNK_SIZE - within, len(data) - position)
            if nowait:
                # Under the image's lock, a chunk only this image maps stays its own.
                chunk = image.chunks.get(index)
                if chunk is None or self.refs.get(chunk) != 1:
                    return False
            elif self._shared_and_same(image, index, within, data[position : position + take]):
                position += take
                continue
            else:
                chunk = self._writable_chunk(image, index)
            fd = self._use_fd(image, index, chunk, nowait)
            if fd is None:
                return False
            pieces.append((chunk, fd, within, position, take))
            position += take
        return True

    def _shared_and_same(self, image: Image, index: int, within: int, piece: memoryview) -> bool:
        """Whether `piece` would land on a shared chunk that already holds exactly it.

        Such a write is left out: copying the chunk would change nothing but its id, and
        the id is what tells a snapshot's changed blocks (ListChangedBlocks) from shared
        ones. The comparison reads at most what the copy would have read.
        """
        with self._lock:
            chunk = image.chunks.get(index)
            if chunk is None or self.refs[chunk] <= 1:
                return False
            fd = self._use_fd(image, index, chunk, nowait=False)
        assert fd is not None
        try:
            held = os.pread(fd, len(piece), within)
        finally:
            self._done_with([chunk])
        held += ZEROS[: len(piece) - len(held)]  # a short chunk file reads as zeros past its end
        return held == piece

    def _writable_chunk(self, image: Image, index: int) -> int:
        """The chunk to write index `index` of `image` into: its own, copying a shared one."""
        with self._lock:
            chunk = image.chunks.get(index)
            if chunk is not None:
                self._existing_fd(
                    image.name, index, chunk
                )  # a lost chunk is neither rewritten nor copied
                if self.refs[chunk] == 1:
                    return chunk
            fresh = self._new_chunk(copy_of=chunk)
            if chunk is not None:
                self._unref(chunk)
            image.chunks[index] = fresh
            self._map_changes[(image.name, index)] = fresh
            return fresh

    # ---- durability -----------------------------------------------------------------

    def flush(self) -> None:
        """Make every write so far durable: fsync chunk data, then commit the maps.

        The chunk files are synced outside the store's lock, so reads and writes go
        on meanwhile; what they change is left for the next flush.
        """
        with self._flushing:
            with self._lock:
                dirty, fds = self._files.take_dirty()
                images = {
                    name: None if image is None else (image.size, int(image.read_only))
                    for name, image in self._image_changes.items()
                }
                maps, self._map_changes = self._map_changes, {}
                refs = {chunk: self.refs.get(chunk, 0) for chunk in self._ref_changes}
                self._ref_changes = set()
                self._image_changes = {}
            try:
                try:
                    for fd in fds:
                        os.fsync(fd)
                finally:
                    for fd in fds:
                        os.close(fd)
                if images or maps or refs:
                    self._commit(images, maps, refs)
            except BaseException:
                with self._lock:  # to be synced and committed by the next flush
                    self._files.keep_dirty(dirty)
                    for (name, index), mapped in maps.items():
                        self._map_changes.setdefault((name, index), mapped)
                    self._ref_changes |= set(refs)
                    for name in images:
                        if name not in self._image_changes:
                            self._image_changes[name] = self.images.get(name)
                raise
            # Only after the commit: a crash before it leaves these files referenced.
            with self._lock:
                for chunk, count in refs.items():
                    if count <= 0 and self.refs.get(chunk, 0) <= 0:
                        self.refs.pop(chunk, None)
                        self._files.forget(chunk)
                        self.chunk_path(chunk).unlink(missing_ok=True)

    def commit_changes(self) -> None:
        """`flush` if a map, reference count or image changed since the last one.

        For the periodic flush: chunk data rewritten in place lives in the page cache,
        which a killed server does not take with it; only map changes need a commit
        (and the sync of the data they point at) to survive one.
        """
        with self._lock:
            pending = bool(self._map_changes or self._ref_changes or self._image_changes)
        if pending:
            self.flush()

    def _commit(
        self,
        images: dict[str, tuple[int, int] | None],
        maps: dict[tuple[str, int], int | None],
        refs: dict[int, int],
    ) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for name, row in images.items():
                if row is None:
                    self._db.execute("DELETE FROM images WHERE name=?", (name,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO images VALUES (?, ?, ?)", (name, *row))
            for (name, index), mapped in maps.items():
                if mapped is None:
                    self._db.execute("DELETE FROM maps WHERE image=? AND idx=?", (name, index))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO maps VALUES (?, ?, ?)", (name, index, mapped)
                    )
            for chunk, count in refs.items():
                if count <= 0:
                    self._db.execute("DELETE FROM chunks WHERE id=?", (chunk,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?)", (chunk, count))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def used_bytes(self) -> int:
        """Disk space the chunk files take."""
        return sum(
            path.stat().st_blocks * 512 for path in self.chunks_dir.glob("*/*") if path.is_file()
        )

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._files.close()
            self._db.close()
