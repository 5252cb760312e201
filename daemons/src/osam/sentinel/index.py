"""What the receiver has acknowledged, per path: the sentinel's durable view of the replica.

It lets a verifying walk find what changed without reading data, lets a changed large file
travel as a block delta (old block hashes, and the size and mtime the receiver must still
have), and lets a hard link made later be sent as a link to a name the replica already has.
Rows change only when a checkpoint is acknowledged, so the index never runs ahead of the replica.
"""
from __future__ import annotations

import os
import sqlite3
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY, kind TEXT, mode INTEGER, uid INTEGER, gid INTEGER,
    size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, dev INTEGER, ino INTEGER, hashes BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_ino ON files (ino);
"""


class Row(NamedTuple):
    path: bytes
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int
    hashes: Optional[bytes]  # 8-byte block digests, for files large enough for deltas


def row_from_stat(path: bytes, kind: str, st: os.stat_result, hashes: Optional[bytes] = None) -> Row:
    return Row(path, kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
               st.st_ctime_ns, st.st_dev, st.st_ino, hashes)


def subtree_bounds(path: bytes) -> Tuple[bytes, bytes]:
    """[lo, hi) of the BLOB keys strictly below path ("/" + 1 == "0")."""
    return path + b"/", path + b"0"


class Index:
    def __init__(self, db_path: str):
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, path: bytes) -> Optional[Row]:
        r = self._db.execute("SELECT * FROM files WHERE path = ?", (path,)).fetchone()
        return Row(*r) if r else None

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM files").fetchone()[0]

    def paths_with_inode(self, dev: int, ino: int) -> List[bytes]:
        return [r[0] for r in self._db.execute(
            "SELECT path FROM files WHERE ino = ? AND dev = ? AND kind != 'd' ORDER BY path", (ino, dev))]

    def all_rows(self) -> Iterator[Row]:
        for r in self._db.execute("SELECT * FROM files ORDER BY path"):
            yield Row(*r)

    def apply(self, ops: Iterable[tuple]) -> None:
        """Apply acknowledged changes in order, in one transaction:
        ("put", Row) | ("delete", path) | ("rename", old, new)."""
        db = self._db
        db.execute("BEGIN")
        try:
            for op in ops:
                if op[0] == "put":
                    db.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)", op[1])
                elif op[0] == "delete":
                    lo, hi = subtree_bounds(op[1])
                    db.execute("DELETE FROM files WHERE path = ? OR (path >= ? AND path < ?)", (op[1], lo, hi))
                elif op[0] == "rename":
                    self._rename(op[1], op[2])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _rename(self, old: bytes, new: bytes) -> None:
        db = self._db
        lo, hi = subtree_bounds(new)
        db.execute("DELETE FROM files WHERE path = ? OR (path >= ? AND path < ?)", (new, lo, hi))
        lo, hi = subtree_bounds(old)
        rows = db.execute("SELECT * FROM files WHERE path = ? OR (path >= ? AND path < ?)",
                          (old, lo, hi)).fetchall()
        db.execute("DELETE FROM files WHERE path = ? OR (path >= ? AND path < ?)", (old, lo, hi))
        db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       [(new + r[0][len(old):],) + tuple(r[1:]) for r in rows])

    def clear(self) -> None:
        self._db.execute("DELETE FROM files")
