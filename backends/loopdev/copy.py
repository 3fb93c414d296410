"""Copy an image file at the cost of its data, not its size.

A reflink clone (FICLONE) where the filesystem shares blocks (XFS, btrfs): instant
and point-in-time. Elsewhere a sparse-aware copy that visits only the data
extents (SEEK_DATA/SEEK_HOLE) and moves them with copy_file_range in the kernel.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

FICLONE = 0x40049409
_CHUNK = 64 * 1024 * 1024
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


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
