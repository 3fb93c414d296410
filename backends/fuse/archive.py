"""The archive tier of the fuse backend: an archived snapshot's data leaves the shared
chunk store for a file of its own, a full copy (EBS archives full snapshots, not
increments), and comes back as chunks of its own on restore.

An archive file is a header line (`fakestor-archive 1 SIZE\\n`) and then, per chunk the
snapshot maps, its index (8 bytes, big-endian) and its CHUNK_SIZE bytes. It is written
beside its final name, synced and renamed into place before the image leaves the store,
and removed only once a restore has put every chunk back and flushed the store: a crash
at any point leaves the data in one place or the other, and the step is redone.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from backends.fuse.chunk_files import CHUNK_SIZE
from backends.fuse.chunks import ChunkStore

MAGIC = b"fakestor-archive 1"
INDEX = struct.Struct(">Q")


def archive_path(directory: Path, snapshot_id: str) -> Path:
    return directory / f"{snapshot_id}.archive"


def archive(store: ChunkStore, directory: Path, snapshot_id: str) -> None:
    """Move the snapshot's data from the store into its archive file; idempotent."""
    final = archive_path(directory, snapshot_id)
    if not final.exists():
        image = store.image(snapshot_id)
        directory.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(final.name + ".partial")
        with partial.open("wb") as out:
            out.write(MAGIC + f" {image.size}\n".encode())
            for index in sorted(image.chunks):
                offset = index * CHUNK_SIZE
                data = store.read(snapshot_id, offset, min(CHUNK_SIZE, image.size - offset))
                out.write(INDEX.pack(index))
                out.write(data.ljust(CHUNK_SIZE, b"\0"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, final)
        _fsync_dir(directory)
    store.delete(snapshot_id)


def restore(store: ChunkStore, directory: Path, snapshot_id: str) -> None:
    """Bring an archived snapshot's data back into the store; idempotent."""
    final = archive_path(directory, snapshot_id)
    if not final.exists():
        return  # restored already (or never archived)
    # The chunks go into a writable image first; the snapshot's own image is made from it
    # only once all are there, so an image of the snapshot in the store is a whole one.
    restoring = f"restoring-{snapshot_id}"
    if snapshot_id not in store.images:
        store.delete(restoring)  # what a restore cut short had put back
        with final.open("rb") as archived:
            magic, _, size_text = archived.readline().rstrip(b"\n").rpartition(b" ")
            if magic != MAGIC:
                raise OSError(f"{final} is not a fakestor archive")
            size = int(size_text)
            store.create(restoring, size)
            while header := archived.read(INDEX.size):
                (index,) = INDEX.unpack(header)
                data = archived.read(CHUNK_SIZE)
                offset = index * CHUNK_SIZE
                store.write(restoring, offset, data[: max(0, min(CHUNK_SIZE, size - offset))])
        store.flush()
        store.create(snapshot_id, size, source=restoring)
    store.delete(restoring)
    final.unlink()
    _fsync_dir(directory)


def delete(directory: Path, snapshot_id: str) -> None:
    final = archive_path(directory, snapshot_id)
    final.unlink(missing_ok=True)
    final.with_name(final.name + ".partial").unlink(missing_ok=True)


def archived(directory: Path) -> set[str]:
    """The snapshots whose data is in an archive file."""
    if not directory.is_dir():
        return set()
    return {path.name.removesuffix(".archive") for path in directory.glob("snap-*.archive")}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
