"""A lazy restore for data dirs without reflinks (ext4): the volume's image starts sparse,
a durable per-block record says which blocks hold the snapshot's data yet, and the blocks
are copied by the initialization pass at its rate, or on a write's first touch.

Files beside `volumes/<vol-id>.img` while the volume is lazy:

    <vol-id>.img.source   a hard link to the snapshot's image (immutable; the link keeps
                          it when the snapshot is deleted or archived)
    <vol-id>.img.lazy     the record: a header, then one bit per BLOCK of the source,
                          set once the block is in the image (holes of the source are
                          set from the start); each bit is written and fdatasync'd
                          after the block it stands for is

A block is copied under a lock of its own (striped), so the pass, reads and writes through
the policy layer never interleave on it: a write to an uncopied block copies the block and
records it durably first, so a later copy can never overwrite an acknowledged write.
Once every bit is set, both files go and the image is an ordinary one.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from backends.loopdev.copy import data_extents, try_reflink

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024
HEADER = 512
MAGIC = b"fakestor-lazy-restore 1"
_STRIPES = 64
_NOT_ALL_SET = re.compile(rb"[^\xff]")


def reflinks(directory: Path) -> bool:
    """Whether the filesystem of `directory` clones files (FICLONE: xfs, btrfs; not ext4)."""
    first, second = directory / ".reflink-probe", directory / ".reflink-probe.clone"
    try:
        first.write_bytes(b"probe")
        source = os.open(first, os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(second, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                return try_reflink(source, target)
            finally:
                os.close(target)
        finally:
            os.close(source)
    finally:
        first.unlink(missing_ok=True)
        second.unlink(missing_ok=True)


def wanted(directory: Path) -> bool:
    """Whether restores into `directory` are lazy: its filesystem has no reflinks, and the
    policy layer that reads a lazy volume can run (pyfuse3, /dev/fuse); else a full copy."""
    if reflinks(directory):
        return False
    if importlib.util.find_spec("pyfuse3") is None or not os.path.exists("/dev/fuse"):
        log.warning("restores are full copies: the data dir has no reflinks and the policy "
                    "layer a lazy restore needs cannot run (pyfuse3, /dev/fuse)")  # fmt: skip
        return False
    return True


def record_of(image: Path) -> Path:
    return image.with_name(image.name + ".lazy")


def source_of(image: Path) -> Path:
    return image.with_name(image.name + ".source")


def _fsync(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare(source: Path, image: Path, partial: Path, size: int) -> None:
    """Make `partial` (renamed to `image` by the caller) a lazy restore of `source`: a
    sparse file of `size` bytes, the source linked and the record written, all durable.

    Raises OSError (EXDEV or EPERM where the source cannot be linked: the caller copies).
    """
    link = source_of(image)
    link.unlink(missing_ok=True)
    os.link(source, link)
    source_size = source.stat().st_size
    blocks = -(-source_size // BLOCK)
    copied = bytearray(b"\xff" * (-(-blocks // 8)))
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, length in data_extents(fd):
            for block in range(start // BLOCK, -(-(start + length) // BLOCK)):
                copied[block // 8] &= ~(1 << (block % 8)) & 0xFF
    finally:
        os.close(fd)
    header = f"{MAGIC.decode()} {BLOCK} {source_size}\n".encode().ljust(HEADER, b"\0")
    record_partial = record_of(image).with_name(record_of(image).name + ".partial")
    record_partial.write_bytes(header + bytes(copied))
    _fsync(record_partial)
    os.rename(record_partial, record_of(image))
    target = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(target, max(size, source_size))
        os.fsync(target)
    finally:
        os.close(target)
    _fsync(image.parent, directory=True)


class LazyImage:
    """An image being restored lazily: its record, source and per-block locks."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self._record = os.open(record_of(image), os.O_RDWR | os.O_CLOEXEC)
        try:
            header = os.pread(self._record, HEADER, 0)
            magic, block, source_size = header.split(b"\n", 1)[0].rsplit(b" ", 2)
            if magic != MAGIC or int(block) != BLOCK:
                raise OSError(f"{record_of(image)} is not a lazy restore record")
            self.source_size = int(source_size)
            self.blocks = -(-self.source_size // BLOCK)
            self._bits = bytearray(os.pread(self._record, -(-self.blocks // 8), HEADER))
            self._source = os.open(source_of(image), os.O_RDONLY | os.O_CLOEXEC)
            try:
                self._target = os.open(image, os.O_RDWR | os.O_CLOEXEC)
            except BaseException:
                os.close(self._source)
                raise
        except BaseException:
            os.close(self._record)
            raise
        self._locks = [threading.Lock() for _ in range(_STRIPES)]
        self._record_lock = threading.Lock()
        # The bits past the last block are set, as copied.
        self._left = len(self._bits) * 8 - int.from_bytes(self._bits, "little").bit_count()
        self.closed = False

    # ---- the record ---------------------------------------------------------

    def copied(self, block: int) -> bool:
        return block >= self.blocks or bool(self._bits[block // 8] & (1 << (block % 8)))

    @property
    def complete(self) -> bool:
        return self._left == 0

    def uncopied_bytes(self) -> int:
        last = self.blocks - 1
        return self._left * BLOCK - (0 if self.copied(last) else BLOCK - self.length(last))

    def next_uncopied(self, block: int) -> int | None:
        """The first block from `block` on not copied yet (whole bytes of set bits skipped)."""
        block = max(0, block)
        while block < self.blocks:
            if not self.copied(block):
                return block
            block += 1
            if block % 8 == 0:
                found = _NOT_ALL_SET.search(self._bits, block // 8)
                if found is None:
                    return None
                block = max(block, found.start() * 8)
        return None

    def length(self, block: int) -> int:
        return min(BLOCK, self.source_size - block * BLOCK)

    def _lock(self, block: int) -> threading.Lock:
        return self._locks[block % _STRIPES]

    def copy_block(self, block: int) -> int:
        """Copy one block into the image and record it, both durable; its length (0 if
        another reader or writer copied it first). Raises OSError."""
        with self._lock(block):
            return self._copy_locked(block)

    def _copy_locked(self, block: int) -> int:
        if self.closed:  # forgotten (deleted) meanwhile: its descriptors may be reused
            raise OSError(errno.EBADF, "the lazy restore was closed")
        if self.copied(block):
            return 0
        offset = block * BLOCK
        data = os.pread(self._source, self.length(block), offset)
        # The image's uncopied blocks were never written (a write copies first): a block
        # of zeros is there already as a hole.
        if data.count(0) != len(data):
            os.pwrite(self._target, data, offset)
            os.fdatasync(self._target)
        index = block // 8
        with self._record_lock:  # eight blocks share a byte of the record
            self._bits[index] |= 1 << (block % 8)
            os.pwrite(self._record, bytes(self._bits[index : index + 1]), HEADER + index)
            os.fdatasync(self._record)
            self._left -= 1
        # The pass of the initialization leaves the page cache to the volume's workload.
        os.posix_fadvise(self._source, offset, len(data), os.POSIX_FADV_DONTNEED)
        return len(data)

    # ---- I/O of the policy layer ----------------------------------------------

    def _blocks(self, offset: int, size: int) -> range:
        return range(offset // BLOCK, -(-(offset + size) // BLOCK))

    def read(self, fd: int, offset: int, size: int) -> bytes:
        """Read through the image's `fd`: copied blocks from the image, the others from
        the source (served, not copied: the pass copies them at its rate)."""
        parts: list[bytes] = []
        position, end = offset, offset + size
        for block in self._blocks(offset, size):
            stop = min(end, (block + 1) * BLOCK)
            if self.copied(block):
                parts.append(os.pread(fd, stop - position, position))
            else:
                with self._lock(block):
                    if self.closed:
                        raise OSError(errno.EBADF, "the lazy restore was closed")
                    copied = self.copied(block)
                    part = os.pread(fd if copied else self._source, stop - position, position)
                parts.append(part.ljust(stop - position, b"\0"))
            position = stop
        return b"".join(parts)

    def write(self, fd: int, offset: int, data: bytes) -> int:
        """Write through the image's `fd`, each uncopied block it touches copied first."""
        for block in self._blocks(offset, len(data)):
            if not self.copied(block):
                self.copy_block(block)
        return os.pwrite(fd, data, offset)

    # ---- the end ------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        with contextlib.ExitStack() as held:
            for lock in self._locks:
                held.enter_context(lock)
            self.closed = True
            for fd in (self._source, self._target, self._record):
                with contextlib.suppress(OSError):
                    os.close(fd)


class LazyImages:
    """The lazily restored images of a volumes dir, by volume id (its image's stem)."""

    def __init__(self, volumes_dir: Path, suffix: str) -> None:
        self.volumes_dir = volumes_dir
        self.suffix = suffix
        self._images: dict[str, LazyImage] = {}
        self._finished: set[str] = set()  # complete since this run began
        self._lock = threading.Lock()

    def image_of(self, volume_id: str) -> Path:
        return self.volumes_dir / f"{volume_id}{self.suffix}"

    def prepare(self, source: Path, image: Path, partial: Path, size: int) -> bool:
        """`prepare` the volume's lazy restore; False where the snapshot's image cannot be
        linked (another filesystem): the caller copies it whole. Raises OSError."""
        try:
            prepare(source, image, partial, size)
        except OSError as failure:
            record_of(image).unlink(missing_ok=True)
            source_of(image).unlink(missing_ok=True)
            if failure.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                log.info("restoring %s by a full copy: %s", image.stem, failure)
                return False
            raise
        return True

    def start(self) -> None:
        """Load the records a previous run left; drop those of images gone (interrupted
        creates and deletes) and finish those complete."""
        for record in sorted(self.volumes_dir.glob(f"*{self.suffix}.lazy")):
            volume_id = record.name.removesuffix(f"{self.suffix}.lazy")
            image = self.image_of(volume_id)
            if not image.exists():
                log.info("removing the lazy restore record of %s (no image)", volume_id)
                self.forget(volume_id)
                continue
            try:
                self._images[volume_id] = LazyImage(image)
            except (OSError, ValueError) as failure:
                log.error("cannot resume the lazy restore of %s: %s", volume_id, failure)
                continue
            self._finish_if_complete(volume_id)
        for link in self.volumes_dir.glob(f"*{self.suffix}.source"):
            if not record_of(link.with_name(link.name.removesuffix(".source"))).exists():
                link.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            images, self._images = list(self._images.values()), {}
        for lazy in images:
            lazy.close()

    def add(self, volume_id: str) -> None:
        lazy = LazyImage(self.image_of(volume_id))
        with self._lock:
            self._images[volume_id] = lazy
        self._finish_if_complete(volume_id)

    def get(self, volume_id: str) -> LazyImage | None:
        """The volume's lazy image while blocks are left to copy; None otherwise."""
        lazy = self._images.get(volume_id)
        return lazy if lazy is not None and not lazy.complete else None

    def __contains__(self, volume_id: str) -> bool:
        return self.get(volume_id) is not None

    def restored_lazily(self, volume_id: str) -> bool:
        """Whether the volume's pass is (or was, in this run) a lazy restore's copy."""
        return volume_id in self._images or volume_id in self._finished

    def copy_from(self, volume_id: str, position: int, budget: int, end: int) -> tuple[int, int]:
        """One step of the initialization pass: copy about `budget` bytes of the volume's
        uncopied blocks from byte `position` on; (the position reached, bytes copied), `end`
        once none is left. Raises OSError."""
        lazy = self._images.get(volume_id)
        if lazy is None:
            return end, 0
        visited = 0
        block = position // BLOCK
        while visited < budget:
            found = lazy.next_uncopied(block)
            if found is None:
                self._finish_if_complete(volume_id)
                return end, visited
            visited += lazy.copy_block(found) or lazy.length(found)
            block = found + 1
        return min(end, block * BLOCK), visited

    def materialize(self, volume_id: str) -> None:
        """Copy every block left at full speed, then make the image an ordinary one.
        Raises OSError."""
        lazy = self._images.get(volume_id)
        if lazy is None:
            return
        log.info("copying the rest of %s's restore now", volume_id)
        block: int | None = 0
        while (block := lazy.next_uncopied(block or 0)) is not None:
            lazy.copy_block(block)
        self._finish_if_complete(volume_id)

    def _finish_if_complete(self, volume_id: str) -> None:
        lazy = self._images.get(volume_id)
        if lazy is None or not lazy.complete:
            return
        with self._lock:
            self._images.pop(volume_id, None)
            self._finished.add(volume_id)
        lazy.close()
        self.forget(volume_id)
        log.info("the restore of %s is complete", volume_id)

    def forget(self, volume_id: str) -> None:
        """Drop the volume's record and source link (a delete, or a complete restore)."""
        with self._lock:
            lazy = self._images.pop(volume_id, None)
        if lazy is not None:
            lazy.close()
        image = self.image_of(volume_id)
        record_of(image).unlink(missing_ok=True)  # the record first: no source, no record
        source_of(image).unlink(missing_ok=True)
        _fsync(self.volumes_dir, directory=True)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._images))
