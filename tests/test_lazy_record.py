"""The lazy restore's record on its own (no root): which blocks start copied, reads that
mix the image and the snapshot, a write that copies its blocks first, the pass's steps,
and the files gone once the copy is complete."""

from __future__ import annotations

import os
import random
from pathlib import Path

from backends.loopdev import lazy

MIB = 1024 * 1024
EXTENTS = (0, 3 * MIB + 4096, 17 * MIB, 39 * MIB + 8192)


def _restore(tmp_path: Path) -> tuple[lazy.LazyImages, bytes]:
    source = tmp_path / "snap-1.img"
    with source.open("wb") as data:
        data.truncate(40 * MIB)
        for offset in EXTENTS:
            data.seek(offset)
            data.write(os.urandom(MIB // 2))
    image, partial = tmp_path / "vol-1.img", tmp_path / "vol-1.img.partial"
    lazy.prepare(source, image, partial, 64 * MIB)
    os.rename(partial, image)
    images = lazy.LazyImages(tmp_path, ".img")
    images.add("vol-1")
    return images, source.read_bytes() + bytes(24 * MIB)


def test_holes_of_the_snapshot_start_copied(tmp_path: Path) -> None:
    images, _ = _restore(tmp_path)
    restoring = images.get("vol-1")
    assert restoring is not None
    assert [b for b in range(64) if not restoring.copied(b)] == [0, 3, 17, 39]
    assert [restoring.next_uncopied(b) for b in (0, 1, 4, 18, 40)] == [0, 3, 17, 39, None]
    assert (tmp_path / "vol-1.img").stat().st_blocks == 0  # nothing copied yet


def test_reads_writes_and_the_pass_give_the_snapshot_plus_the_writes(tmp_path: Path) -> None:
    images, expected = _restore(tmp_path)
    restoring = images.get("vol-1")
    assert restoring is not None
    fd = os.open(tmp_path / "vol-1.img", os.O_RDWR)
    try:
        for _ in range(100):
            offset, size = random.randrange(64 * MIB - MIB), random.randrange(1, MIB)
            assert restoring.read(fd, offset, size) == expected[offset : offset + size]
        written = os.urandom(5000)
        restoring.write(fd, 3 * MIB - 100, written)  # a hole's block, then an uncopied one
        assert restoring.copied(3)
        expected = expected[: 3 * MIB - 100] + written + expected[3 * MIB + 4900 :]
        assert restoring.read(fd, 3 * MIB - 100, 5000) == written
    finally:
        os.close(fd)
    # A step of the pass: 2 MiB of the blocks left, from the start.
    assert images.copy_from("vol-1", 0, 2 * MIB, 64 * MIB) == (18 * MIB, 2 * MIB)
    # A reload (a restart) finds the same record.
    images.close()
    images = lazy.LazyImages(tmp_path, ".img")
    images.start()
    resumed = images.get("vol-1")
    assert resumed is not None and resumed.uncopied_bytes() == MIB
    assert images.copy_from("vol-1", 18 * MIB, 2 * MIB, 64 * MIB) == (64 * MIB, MIB)
    assert images.get("vol-1") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap-1.img", "vol-1.img"]
    assert (tmp_path / "vol-1.img").read_bytes() == expected


def test_an_interrupted_create_leaves_nothing(tmp_path: Path) -> None:
    images, _ = _restore(tmp_path)
    images.close()
    os.rename(tmp_path / "vol-1.img", tmp_path / "vol-1.img.partial")  # before its rename
    images = lazy.LazyImages(tmp_path, ".img")
    images.start()
    assert "vol-1" not in images
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap-1.img", "vol-1.img.partial"]
