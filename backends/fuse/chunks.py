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
import resource
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK_SIZE = 512 * 1024
MIN_OPEN_CHUNKS = 256
MAX_OPEN_CHUNKS = 16384  # 8 GiB of chunks; an open file costs the kernel about 1 KiB
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


def open_chunk_limit() -> int:
    """How many chunk files to keep open: up to half the descriptors this process may have.

    A random workload over a volume touches chunks all over it; closing and reopening
    a chunk file per request costs two syscalls and a path lookup each time. The soft
    limit is raised towards the hard one for that.
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


@dataclass
class Image:
    name: str
    size: int
    read_only: bool
    chunks: dict[int, int] = field(default_factory=dict)  # index -> chunk id
    lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass
class CheckReport:
    orphan_files: list[int] = field(default_factory=list)
    missing_files: list[int] = field(default_factory=list)
    wrong_refcounts: list[tuple[int, int, int]] = field(default_factory=list)  # id, had, real
    lost_chunks: dict[str, int] = field(default_factory=dict)  # image -> chunks it lost
    repaired: bool = False  # orphans removed and reference counts corrected

    @property
    def damaged(self) -> bool:
        """Data is lost: nothing can repair that."""
        return bool(self.missing_files)

    @property
    def needs_repair(self) -> bool:
        """Reference counts are wrong (garbage files alone are harmless: a start removes them)."""
        return bool(self.wrong_refcounts) and not self.repaired

    def lines(self) -> list[str]:
        removed = " (removed)" if self.repaired else ""
        corrected = " (corrected)" if self.repaired else ""
        found = [f"chunk {c}: file without references, garbage{removed}" for c in self.orphan_files]
        found += [
            f"chunk {c}: referenced but its file is missing: data lost" for c in self.missing_files
        ]
        found += [
            f"chunk {c}: reference count {had}, really {real}{corrected}"
            for c, had, real in self.wrong_refcounts
        ]
        found += [
            f"{image}: {count} chunk(s) of {CHUNK_SIZE // 1024} KiB lost; reads of them fail"
            for image, count in sorted(self.lost_chunks.items())
        ]
        return found


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
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._max_open = open_chunk_limit()
        # Dirty chunks pushed out of _fds: the next flush syncs and closes them, so an
        # eviction never stalls a writer on an fsync.
        self._closing: dict[int, int] = {}
        self._dirty: set[int] = set()  # chunk ids written since the last flush
        # Chunks whose descriptor a read or write uses outside the lock: never evicted.
        self._in_use: dict[int, int] = {}
        # Changes to commit at the next flush: map entries and reference counts.
        self._map_changes: dict[tuple[str, int], int | None] = {}
        self._ref_changes: set[int] = set()
        self._image_changes: dict[str, Image | None] = {}

    # ---- chunk files --------------------------------------------------------------

    def chunk_path(self, chunk: int) -> Path:
        return self.chunks_dir / f"{chunk % 256:02x}" / str(chunk)

    def _fd(self, chunk: int, create: bool = False) -> int:
        with self._lock:
            fd = self._fds.get(chunk)
            if fd is not None:
                self._fds.move_to_end(chunk)
                return fd
            fd = self._closing.pop(chunk, None)
            if fd is None:
                path = self.chunk_path(chunk)
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
                elif old_chunk not in self._dirty:
                    os.close(old_fd)
                elif len(self._closing) < self._max_open // 2:
                    self._closing[old_chunk] = old_fd
                else:  # more dirty chunks than descriptors to spare: sync this one now
                    os.fsync(old_fd)
                    self._dirty.discard(old_chunk)
                    os.close(old_fd)
            return fd

    def _existing_fd(self, name: str, index: int, chunk: int) -> int:
        try:
            return self._fd(chunk)
        except FileNotFoundError:
            raise ChunkLost(
                f"{name}: chunk {chunk} (bytes {index * CHUNK_SIZE} to "
                f"{(index + 1) * CHUNK_SIZE - 1}) is missing from the block store"
            ) from None

    def _forget_fd(self, chunk: int) -> None:
        for fds in (self._fds, self._closing):
            fd = fds.pop(chunk, None)
            if fd is not None:
                os.close(fd)
        self._dirty.discard(chunk)

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
            self._dirty.add(chunk)
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
            fd = self._existing_fd(image.name, index, chunk)
            self._in_use[chunk] = self._in_use.get(chunk, 0) + 1
            return fd
        finally:
            self._lock.release()

    def _done_with(self, chunks: list[int], dirty: bool = False) -> None:
        with self._lock:
            for chunk in chunks:
                count = self._in_use.pop(chunk) - 1
                if count:
                    self._in_use[chunk] = count
            if dirty:
                self._dirty.update(chunks)

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
                dirty, self._dirty = self._dirty, set()
                closing, self._closing = self._closing, {}
                # Duplicates: an eviction may close the cached descriptors meanwhile.
                fds = [os.dup(self._fds[c]) for c in dirty if c in self._fds]
                fds += closing.values()
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
                    self._dirty |= dirty & set(self._fds)
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
                        self._forget_fd(chunk)
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
            for fd in [*self._fds.values(), *self._closing.values()]:
                os.close(fd)
            self._fds.clear()
            self._closing.clear()
            self._db.close()


def check_store(root: Path, repair: bool = False) -> CheckReport:
    """Compare reference counts and chunk files with the maps of the chunk store at `root`.

    Only the owner of the data dir may call this with `repair` (the server holding
    its lock, before it serves; `fakestor check --repair` on a stopped server): an
    orphan chunk file is garbage only once no writer may still commit it. With
    `repair`, orphans are removed and reference counts corrected. A missing chunk
    file is damage that no repair undoes; the report names the images that lost data.
    """
    report = CheckReport()
    chunks_dir = root / "chunks"
    db = sqlite3.connect(root / "blocks.db", isolation_level=None)
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        real: dict[int, int] = {}
        for (chunk,) in db.execute("SELECT chunk FROM maps"):
            real[chunk] = real.get(chunk, 0) + 1
        recorded = dict(db.execute("SELECT id, refs FROM chunks").fetchall())
        files = {
            int(path.name)
            for path in chunks_dir.glob("*/*")
            if path.name.isdigit() and path.is_file()
        }
        report.orphan_files = sorted(files - set(real))
        report.missing_files = sorted(set(real) - files)
        if report.missing_files:
            lost = set(report.missing_files)
            for image, chunk in db.execute("SELECT image, chunk FROM maps"):
                if chunk in lost:
                    report.lost_chunks[image] = report.lost_chunks.get(image, 0) + 1
        report.wrong_refcounts = sorted(
            (chunk, recorded.get(chunk, 0), count)
            for chunk, count in real.items()
            if recorded.get(chunk, 0) != count
        )
        stale_rows = sorted(set(recorded) - set(real))
        if repair:
            for chunk in report.orphan_files:
                (chunks_dir / f"{chunk % 256:02x}" / str(chunk)).unlink(missing_ok=True)
            db.execute("BEGIN IMMEDIATE")
            for chunk, _, count in report.wrong_refcounts:
                db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?)", (chunk, count))
            for chunk in stale_rows:
                db.execute("DELETE FROM chunks WHERE id=?", (chunk,))
            db.execute("COMMIT")
            report.repaired = True
    finally:
        db.close()
    return report
