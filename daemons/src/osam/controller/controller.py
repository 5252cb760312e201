"""The receiver's controller: guests and their migrations, durable in one SQLite file.

Rules come from phases.py (what may happen) and progress.py (rate and ETA); store.py keeps them.
Every change is one transaction, and every phase change writes its history row in the same one,
so a crash leaves either the old phase or the new phase with its history, never half of each.

Calls are synchronous and short; the receiver's event loop calls them directly. A lock makes
the controller safe to share between threads too.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import phases
from .errors import Conflict, InvalidInput, NotFound
from .names import check_guest_name
from .progress import RateSample, eta_seconds, next_rate
from .store import Store
from .timefmt import TimeLike, iso, to_epoch

DB_FILENAME = "controller.sqlite"  # inside the receiver's --data directory
MAX_REASON = 1024
MAX_AGENT_VERSION = 64
# Seconds after a scheduled window's end during which the move to quiesce is still accepted:
# the receiver asks whether the switchover is due, then moves on, and the clock runs between
# the two calls. A yes given inside the window must not turn into a failed migration.
class Controller:
    def __init__(self, db_path: str, *, clock: Callable[[], float] = time.time):
        self._store = Store(db_path)
        self._clock = clock
        self._lock = threading.RLock()

    @classmethod
    def in_data_dir(cls, data_dir: str, **options: Any) -> "Controller":
        return cls(os.path.join(data_dir, DB_FILENAME), **options)

    def close(self) -> None:
        with self._lock:
            self._store.close()

    # -- guests ---------------------------------------------------------------------------
    def register_guest(self, name: str, inventory: Dict[str, Any],
                       agent_version: Optional[str] = None) -> Dict[str, Any]:
        check_guest_name(name)
        if not isinstance(inventory, dict):
            raise InvalidInput("inventory must be a JSON object")
        try:
            json.dumps(inventory)
        except (TypeError, ValueError) as error:
            raise InvalidInput(f"inventory is not JSON-serialisable: {error}") from None
        if agent_version is not None and (not isinstance(agent_version, str)
                                          or len(agent_version) > MAX_AGENT_VERSION):
            raise InvalidInput("agent version must be a short string")
        with self._lock, self._store.transaction():
            self._store.upsert_guest(name, inventory, agent_version, self._clock())
            return self._guest_dict(self._store.guest(name))

    def set_connected(self, name: str, connected: bool) -> None:
        check_guest_name(name)
        with self._lock, self._store.transaction():
            if not self._store.set_connected(name, bool(connected), self._clock()):
                raise NotFound(f"guest {name} is not registered")

    def guest(self, name: str) -> Optional[Dict[str, Any]]:
        check_guest_name(name)
        with self._lock:
            row = self._store.guest(name)
            return None if row is None else self._guest_dict(row)

    def guests(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [self._guest_dict(row) for row in self._store.guests()]

    # -- migrations -----------------------------------------------------------------------
    def start_migration(self, name: str, switchover: str = phases.MANUAL,
                        at: Optional[TimeLike] = None,
                        window_end: Optional[TimeLike] = None) -> Dict[str, Any]:
        return self.ensure_migration(name, switchover, at, window_end)[0]

    def ensure_migration(self, name: str, switchover: str = phases.MANUAL,
                         at: Optional[TimeLike] = None,
                         window_end: Optional[TimeLike] = None) -> Tuple[Dict[str, Any], bool]:
        """Start a migration unless an identical one is active. Returns (status, created).

        A scheduled switchover (`at`) may have a window end: it does not start from then on."""
        check_guest_name(name)
        switchover_at, switchover_window_end = _switchover_settings(switchover, at, window_end)
        with self._lock, self._store.transaction():
            if self._store.guest(name) is None:
                raise NotFound(f"guest {name} is not registered")
            current = self._store.latest_migration(name)
            if current is not None and not phases.is_terminal(current["phase"]):
                wanted = (switchover, switchover_at, switchover_window_end)
                if (current["switchover"], current["switchover_at"],
                        current["switchover_window_end"]) != wanted:
                    raise Conflict(f"guest {name} already has an active migration with "
                                   f"switchover {_describe_switchover(current)}")
                return self._migration_dict(current), False
            now = self._clock()
            migration_id = self._store.insert_migration(name, phases.REGISTERED, switchover,
                                                        switchover_at, switchover_window_end, now)
            self._store.add_transition(migration_id, None, phases.REGISTERED, now, None)
            return self._migration_dict(self._store.latest_migration(name)), True

    def advance(self, name: str, to_phase: str, reason: Optional[str] = None) -> Dict[str, Any]:
        check_guest_name(name)
        reason = _check_reason(reason)
        if to_phase in (phases.FAILED, phases.NEEDS_OPERATOR) and reason is None:
            raise InvalidInput(f"{to_phase} needs a reason")
        with self._lock, self._store.transaction():
            return self._advance(self._latest(name), to_phase, reason, self._clock())

    def _advance(self, row: sqlite3.Row, to_phase: str, reason: Optional[str], now: float) -> Dict[str, Any]:
        """The move itself, inside the caller's transaction, judged at `now`."""
        holds = frozenset({phases.SWITCHOVER_IS_DUE}) if self._due(row, now) else frozenset()
        phases.check_transition(row["phase"], to_phase, holds)
        fields: Dict[str, Any] = {"phase": to_phase, "phase_since": now, "updated": now}
        if to_phase in (phases.FAILED, phases.NEEDS_OPERATOR):
            fields["reason"] = reason
        if to_phase == phases.QUIESCE:
            fields["lag_at_switchover"] = row["lag"]
        self._store.update_migration(row["id"], **fields)
        self._store.add_transition(row["id"], row["phase"], to_phase, now, reason)
        return self._migration_dict(self._store.latest_migration(row["guest"]))

    def begin_switchover_if_due(self, name: str) -> bool:
        """continuous_sync -> quiesce if the switchover is due now, in one transaction: a window
        that closes between a check and the move can never fail the migration."""
        check_guest_name(name)
        with self._lock, self._store.transaction():
            row, now = self._latest(name), self._clock()
            if not self._due(row, now):
                return False
            self._advance(row, phases.QUIESCE, None, now)
            return True

    def fail(self, name: str, reason: str) -> Dict[str, Any]:
        return self.advance(name, phases.FAILED, reason)

    def abort(self, name: str) -> Dict[str, Any]:
        return self.advance(name, phases.FAILED, phases.ABORTED_REASON)

    # -- switchover -----------------------------------------------------------------------
    def request_switchover(self, name: str, at: Optional[TimeLike] = None,
                           window_end: Optional[TimeLike] = None) -> Dict[str, Any]:
        """Without `at`: switch over as soon as continuous sync allows. With `at`: (re)schedule,
        with a new window end or none; a missed window is forgotten either way."""
        check_guest_name(name)
        if at is None and window_end is None:
            fields: Dict[str, Any] = {"switchover_requested": 1, "switchover_at": None,
                                      "switchover_window_end": None}
        else:
            when, end = _switchover_settings(phases.AT, at, window_end)
            fields = {"switchover": phases.AT, "switchover_at": when, "switchover_window_end": end,
                      "switchover_requested": 0}
        return self._change_switchover(name, fields)

    def cancel_switchover(self, name: str) -> Dict[str, Any]:
        """Back to waiting for an operator: clears a request, a schedule (and its window) and
        immediate mode."""
        check_guest_name(name)
        return self._change_switchover(name, {"switchover": phases.MANUAL, "switchover_at": None,
                                               "switchover_window_end": None,
                                               "switchover_requested": 0})

    def switchover_due(self, name: str, now: Optional[TimeLike] = None) -> bool:
        check_guest_name(name)
        when = self._clock() if now is None else to_epoch(now)
        with self._lock:
            row = self._store.latest_migration(name)
            return row is not None and self._due(row, when)

    # -- progress -------------------------------------------------------------------------
    def update_progress(self, name: str, *, bytes_done: Optional[int] = None,
                        bytes_total: Optional[int] = None, files_done: Optional[int] = None,
                        files_total: Optional[int] = None,
                        last_sync_at: Optional[TimeLike] = None,
                        lag: Optional[float] = None) -> Dict[str, Any]:
        check_guest_name(name)
        counts = {"bytes_done": bytes_done, "bytes_total": bytes_total,
                  "files_done": files_done, "files_total": files_total}
        fields: Dict[str, Any] = {key: _count(key, value)
                                  for key, value in counts.items() if value is not None}
        if last_sync_at is not None:
            fields["last_sync_at"] = to_epoch(last_sync_at)
        if lag is not None:
            fields["lag"] = _seconds("lag", lag)
        with self._lock, self._store.transaction():
            row = self._latest(name)
            if phases.is_terminal(row["phase"]):
                raise Conflict(f"the migration of {name} is {row['phase']}")
            now = self._clock()
            done = fields.get("bytes_done", row["bytes_done"])
            if "bytes_done" in fields:
                previous = RateSample(row["rate"], row["sample_bytes"], row["sample_at"])
                sample = next_rate(previous, done, now)
                fields.update(rate=sample.rate, sample_bytes=sample.sample_bytes,
                              sample_at=sample.sample_at)
            rate = fields.get("rate", row["rate"])
            fields["eta"] = eta_seconds(done, fields.get("bytes_total", row["bytes_total"]), rate)
            fields["updated"] = now
            self._store.update_migration(row["id"], **fields)
            return self._migration_dict(self._store.latest_migration(name))

    def note_error(self, name: str, message: Optional[str]) -> None:
        """Record what went wrong while the migration carries on (a full replica disk, say);
        None clears it once things work again. Ended migrations keep what they had."""
        check_guest_name(name)
        message = _check_reason(message) if message is not None else None
        with self._lock, self._store.transaction():
            row = self._store.latest_migration(name)
            if row is None or phases.is_terminal(row["phase"]) or row["last_error"] == message:
                return
            self._store.update_migration(row["id"], last_error=message,
                                         last_error_at=self._clock() if message else None)

    # -- queries --------------------------------------------------------------------------
    def migration(self, name: str) -> Optional[Dict[str, Any]]:
        """The active migration of a guest, else its latest one, else None."""
        check_guest_name(name)
        with self._lock:
            row = self._store.latest_migration(name)
            return None if row is None else self._migration_dict(row)

    def migrations(self) -> List[Dict[str, Any]]:
        """One entry per guest that has migrated: its active or latest migration."""
        with self._lock:
            return [self._migration_dict(row) for row in self._store.latest_migrations()]

    # -- internals ------------------------------------------------------------------------
    def _latest(self, name: str) -> sqlite3.Row:
        row = self._store.latest_migration(name)
        if row is None:
            raise NotFound(f"no migration for guest {name}")
        return row

    def _change_switchover(self, name: str, fields: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock, self._store.transaction():
            row = self._latest(name)
            if row["phase"] not in phases.BEFORE_SWITCHOVER:
                raise Conflict(f"the migration of {name} is in {row['phase']}: "
                               "the switchover can no longer be changed")
            fields["updated"] = self._clock()
            self._store.update_migration(row["id"], **fields)
            return self._migration_dict(self._store.latest_migration(name))

    @staticmethod
    def _due(row: sqlite3.Row, now: float) -> bool:
        pass_done = row["last_sync_at"] is not None and row["last_sync_at"] >= row["phase_since"]
        return phases.switchover_due(row["phase"], row["switchover"],
                                     bool(row["switchover_requested"]), row["switchover_at"],
                                     pass_done, now, row["switchover_window_end"])

    @staticmethod
    def _window_missed(row: sqlite3.Row, now: float) -> bool:
        return phases.switchover_window_missed(row["phase"], row["switchover"],
                                               bool(row["switchover_requested"]),
                                               row["switchover_window_end"], now)

    def _guest_dict(self, row: sqlite3.Row) -> Dict[str, Any]:
        migration = self._store.latest_migration(row["name"])
        return {
            "name": row["name"],
            "inventory": json.loads(row["inventory"]),
            "agent_version": row["agent_version"],
            "connected": bool(row["connected"]),
            "first_seen": iso(row["first_seen"]),
            "last_seen": iso(row["last_seen"]),
            "migration_phase": None if migration is None else migration["phase"],
        }

    def _migration_dict(self, row: sqlite3.Row) -> Dict[str, Any]:
        history = [{"from": h["from_phase"], "to": h["to_phase"], "at": iso(h["at"]),
                    "reason": h["reason"]} for h in self._store.history(row["id"])]
        now = self._clock()
        missed = self._window_missed(row, now)
        return {
            "id": row["id"],
            "guest": row["guest"],
            "phase": row["phase"],
            "active": not phases.is_terminal(row["phase"]),
            "phase_since": iso(row["phase_since"]),
            "switchover": row["switchover"],
            "switchover_at": iso(row["switchover_at"]),
            "switchover_window_end": iso(row["switchover_window_end"]),
            "switchover_requested": bool(row["switchover_requested"]),
            "switchover_due": self._due(row, now),
            # The window closed before the switchover began: it waits for a new time.
            "switchover_window_missed_at": iso(row["switchover_window_end"]) if missed else None,
            "switchover_note": _missed_note(row) if missed else None,
            "reason": row["reason"],
            "bytes_done": row["bytes_done"],
            "bytes_total": row["bytes_total"],
            "files_done": row["files_done"],
            "files_total": row["files_total"],
            "rate": None if row["rate"] is None else round(row["rate"], 1),
            "eta": None if row["eta"] is None else round(row["eta"], 1),
            "last_sync_at": iso(row["last_sync_at"]),
            "lag": row["lag"],
            "lag_at_switchover": row["lag_at_switchover"],
            "last_error": row["last_error"],
            "last_error_at": iso(row["last_error_at"]),
            "created": iso(row["created"]),
            "updated": iso(row["updated"]),
            "history": history,
        }


def _switchover_settings(mode: object, at: Optional[TimeLike],
                         window_end: Optional[TimeLike] = None
                         ) -> Tuple[Optional[float], Optional[float]]:
    """(at, window end) as epoch seconds, or InvalidInput saying what is wrong."""
    if mode not in phases.SWITCHOVER_MODES:
        raise InvalidInput(f"switchover must be one of {', '.join(phases.SWITCHOVER_MODES)}")
    when = _time("at", at)
    end = _time("window_end", window_end)
    if end is not None and when is None:
        raise InvalidInput("window_end goes only with a switchover time (at): it ends the "
                           "window a scheduled switchover may start in")
    if mode == phases.AT and when is None:
        raise InvalidInput("switchover 'at' needs a time")
    if mode != phases.AT and when is not None:
        raise InvalidInput("a switchover time goes only with switchover 'at'")
    if end is not None and end <= when:
        raise InvalidInput(f"window_end {iso(end)} must be after at {iso(when)}")
    return when, end


def _time(field: str, value: Optional[TimeLike]) -> Optional[float]:
    try:
        return to_epoch(value)
    except InvalidInput as error:
        raise InvalidInput(f"{field}: {error}") from None


def _describe_switchover(row: sqlite3.Row) -> str:
    if row["switchover"] == phases.AT:
        if row["switchover_window_end"] is not None:
            return f"at {iso(row['switchover_at'])} until {iso(row['switchover_window_end'])}"
        return f"at {iso(row['switchover_at'])}"
    return row["switchover"]


def _missed_note(row: sqlite3.Row) -> str:
    return (f"switchover window {iso(row['switchover_at'])} to "
            f"{iso(row['switchover_window_end'])} missed: waiting for a new time")


def _check_reason(reason: object) -> Optional[str]:
    if reason is None:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidInput(f"reason must be a non-empty string of at most {MAX_REASON} characters")
    return reason


def _count(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{key} must be a non-negative integer")
    return value


def _seconds(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInput(f"{key} must be a non-negative number of seconds")
    return float(value)
