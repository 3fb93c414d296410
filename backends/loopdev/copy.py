"""Copy an image file at the cost of its data, not its size.

A reflink clone (FICLONE) where the filesystem shares blocks (XFS, btrfs): instant
and point-in-time. Elsewhere a sparse-aware copy that visits only the data
extents (SEEK_DATA/SEEK_HOLE) and moves them with copy_file_range in the kernel.
`visit_data` is a volume's initialization pass over such a copy.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

FICLONE = 0x40049409
_CHUNK = 64 * 1024 * 1024
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}
_READ = 1024 * 1024
FALLOC_FL_UNSHARE_RANGE = 0x40
_libc = ctypes.CDLL(None, use_errno=True)


def data_extents(fd: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of every data extent of the file, holes skipped."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as failure:
            if failure.errno == errno.ENXIO:  # only a hole remains
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        offset = end


def data_bytes(path: Path) -> int:
    """How many bytes of the file hold data (allocated or not known to be holes)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sum(length for _, length in data_extents(fd))
    finally:
        os.close(fd)


def try_reflink(source_fd: int, target_fd: int) -> bool:
    try:
        fcntl.ioctl(target_fd, FICLONE, source_fd)
    except OSError as failure:
        if failure.errno in _NO_REFLINK:
            return False
        raise
    return True


def copy_image(source: Path, target: Path, progress: Callable[[int], None] | None = None) -> str:
    """Copy `source` to a new file `target` (same size, same holes); returns the method used.

    Raises OSError (ENOSPC among others); a partly written `target` is left for the
    caller to remove.
    """
    source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if try_reflink(source_fd, target_fd):
                method = "reflink"
            else:
                method = "sparse copy"
                size = os.fstat(source_fd).st_size
                os.ftruncate(target_fd, size)
                extents = list(data_extents(source_fd))
                total = sum(length for _, length in extents) or 1
                done = 0
                for start, length in extents:
                    offset = start
                    end = start + length
                    while offset < end:
                        copied = os.copy_file_range(
                            source_fd, target_fd, min(_CHUNK, end - offset), offset, offset
                        )
                        if copied == 0:
                            break
                        offset += copied
                        done += copied
                        if progress:
                            progress(100 * done // total)
            os.fsync(target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)
    return method


def unshare(fd: int, offset: int, length: int) -> bool:
    """Give the file its own copy of a range it shares with a reflink clone (a real copy,
    done by the filesystem under its locks, so concurrent writes are safe). False where
    the filesystem shares no extents (ext4), whose copies are already whole."""
    mode = FALLOC_FL_UNSHARE_RANGE
    if _libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) == 0:
        return True
    failure = ctypes.get_errno()
    if failure in _NO_REFLINK:
        return False
    raise OSError(failure, os.strerror(failure))


def visit_data(path: Path, position: int, budget: int) -> tuple[int, int]:
    """One step of an initialization pass: from byte `position` on, unshare (where the
    filesystem shares extents) and read about `budget` bytes of the file's data, holes
    skipped. Returns (the position reached, bytes of data visited); the file's size
    once no data is left after it. Raises OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        visited = 0
        while visited < budget and position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as failure:
                if failure.errno == errno.ENXIO:  # only a hole remains
                    return size, visited
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            stop = min(end, start + budget - visited)
            unshare(fd, start, stop - start)
            offset = start
            while offset < stop:
                data = os.pread(fd, min(_READ, stop - offset), offset)
                if not data:
                    break
                offset += len(data)
            # The pass is not the volume's workload: leave the page cache as it was.
            os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_DONTNEED)
            visited += stop - start
            position = stop
        return min(position, size), visited
    finally:
        os.close(fd)
