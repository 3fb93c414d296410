"""Checking the chunk store against its files: orphans, missing chunks, reference counts."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from backends.fuse.chunk_files import CHUNK_SIZE
from backends.fuse.chunks import SCHEMA


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
