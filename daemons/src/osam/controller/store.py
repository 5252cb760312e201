"""SQLite persistence for guests, migrations and their transition history.

Only SQL lives here; the rules live in phases.py and controller.py. The store is not thread-safe
on its own: the controller serialises every call under its lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from typing import Any, Dict, Iterator, List, Optional

SCHEMA_VERSION = 2  # 2: migrations.switchover_window_end

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guests (
    name           TEXT PRIMARY KEY,
    inventory      TEXT NOT NULL,             -- JSON as the sentinel sent it
    agent_version  TEXT,
    first_seen     REAL NOT NULL,
    last_seen      REAL NOT NULL,
    connected      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS migrations (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    guest                 TEXT NOT NULL REFERENCES guests(name),
    phase                 TEXT NOT NULL,
    phase_since           REAL NOT NULL,
    switchover            TEXT NOT NULL,
    switchover_at         REAL,
    switchover_window_end REAL,               -- a scheduled switchover does not start from then on
    switchover_requested  INTEGER NOT NULL DEFAULT 0,
    reason                TEXT,
    created               REAL NOT NULL,
    updated               REAL NOT NULL,
    bytes_done            INTEGER NOT NULL DEFAULT 0,
    bytes_total           INTEGER,
    files_done            INTEGER NOT NULL DEFAULT 0,
    files_total           INTEGER,
    rate                  REAL,               -- bytes/s, smoothed
    eta                   REAL,               -- seconds
    sample_bytes          INTEGER,            -- baseline of the next rate sample
    sample_at             REAL,
    last_sync_at          REAL,
    lag                   REAL,               -- seconds the replica is behind the source
    lag_at_switchover     REAL,
    last_error            TEXT,               -- what last went wrong without failing the migration
    last_error_at         REAL
);
-- One active migration per guest, enforced by the database as well as the controller.
DROP INDEX IF EXISTS migrations_one_active;     -- its terminal phases changed: made again
CREATE UNIQUE INDEX IF NOT EXISTS migrations_one_active_v2
    ON migrations(guest) WHERE phase NOT IN ('completed', 'needs_operator', 'failed');
CREATE INDEX IF NOT EXISTS migrations_by_guest ON migrations(guest, id);
CREATE TABLE IF NOT EXISTS transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    migration   INTEGER NOT NULL REFERENCES migrations(id),
    from_phase  TEXT,                         -- NULL for the row that created the migration
    to_phase    TEXT NOT NULL,
    at          REAL NOT NULL,
    reason      TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_migration ON transitions(migration, id);
"""

# Columns added to `migrations` after its first release, with their declarations: the file of an
# existing receiver gets them with ALTER TABLE (CREATE TABLE IF NOT EXISTS leaves it as it was).
_ADDED_MIGRATION_COLUMNS = (
    ("last_error", "TEXT"),
    ("last_error_at", "REAL"),
    ("switchover_window_end", "REAL"),
)

MIGRATION_COLUMNS = frozenset({
    "phase", "phase_since", "switchover", "switchover_at", "switchover_window_end",
    "switchover_requested", "reason",
    "updated", "bytes_done", "bytes_total", "files_done", "files_total", "rate", "eta",
    "sample_bytes", "sample_at", "last_sync_at", "lag", "lag_at_switchover",
    "last_error", "last_error_at",
})


class Store:
    def __init__(self, path: str):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly by transaction().
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        with self.transaction():
            self._upgrade()

    def _upgrade(self) -> None:
        """Bring a database made by an earlier version up to this schema."""
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(migrations)")}
        for column, declaration in _ADDED_MIGRATION_COLUMNS:
            if column not in present:
                self._db.execute(f"ALTER TABLE migrations ADD COLUMN {column} {declaration}")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- guests ---------------------------------------------------------------------------
    def upsert_guest(self, name: str, inventory: Dict[str, Any], agent_version: Optional[str],
                     now: float) -> None:
        self._db.execute(
            "INSERT INTO guests(name, inventory, agent_version, first_seen, last_seen, connected)"
            " VALUES (?, ?, ?, ?, ?, 1)"
            " ON CONFLICT(name) DO UPDATE SET inventory=excluded.inventory,"
            " agent_version=excluded.agent_version, last_seen=excluded.last_seen, connected=1",
            (name, json.dumps(inventory, sort_keys=True), agent_version, now, now))

    def set_connected(self, name: str, connected: bool, now: float) -> bool:
        cursor = self._db.execute("UPDATE guests SET connected=?, last_seen=? WHERE name=?",
                                  (int(connected), now, name))
        return cursor.rowcount == 1

    def guest(self, name: str) -> Optional[sqlite3.Row]:
        return self._db.execute("SELECT * FROM guests WHERE name=?", (name,)).fetchone()

    def guests(self) -> List[sqlite3.Row]:
        return self._db.execute("SELECT * FROM guests ORDER BY name").fetchall()

    # -- migrations -----------------------------------------------------------------------
    def insert_migration(self, guest: str, phase: str, switchover: str,
                         switchover_at: Optional[float], switchover_window_end: Optional[float],
                         now: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO migrations(guest, phase, phase_since, switchover, switchover_at,"
            " switchover_window_end, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (guest, phase, now, switchover, switchover_at, switchover_window_end, now, now))
        return int(cursor.lastrowid)

    def update_migration(self, migration_id: int, **fields: Any) -> None:
        unknown = set(fields) - MIGRATION_COLUMNS
        if unknown:
            raise KeyError(f"not migration columns: {sorted(unknown)}")
        assignments = ", ".join(f"{column}=?" for column in fields)
        self._db.execute(f"UPDATE migrations SET {assignments} WHERE id=?",
                         (*fields.values(), migration_id))

    def latest_migration(self, guest: str) -> Optional[sqlite3.Row]:
        """The active migration if there is one, else the most recent (the highest id)."""
        return self._db.execute("SELECT * FROM migrations WHERE guest=? ORDER BY id DESC LIMIT 1",
                                (guest,)).fetchone()

    def latest_migrations(self) -> List[sqlite3.Row]:
        return self._db.execute(
            "SELECT * FROM migrations WHERE id IN (SELECT MAX(id) FROM migrations GROUP BY guest)"
            " ORDER BY guest").fetchall()

    # -- history --------------------------------------------------------------------------
    def add_transition(self, migration_id: int, from_phase: Optional[str], to_phase: str,
                       at: float, reason: Optional[str]) -> None:
        self._db.execute(
            "INSERT INTO transitions(migration, from_phase, to_phase, at, reason)"
            " VALUES (?, ?, ?, ?, ?)", (migration_id, from_phase, to_phase, at, reason))

    def history(self, migration_id: int) -> List[sqlite3.Row]:
        return self._db.execute("SELECT * FROM transitions WHERE migration=? ORDER BY id",
                                (migration_id,)).fetchall()
