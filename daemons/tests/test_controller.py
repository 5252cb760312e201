"""The migration state table, the durable controller, switchover modes and rate/ETA."""
import datetime as dt
import re
import threading

import pytest

from osam.controller import Conflict, Controller, IllegalTransition, InvalidInput, NotFound
from osam.controller import phases
from osam.controller.progress import RateSample, eta_seconds, next_rate
from osam.controller.timefmt import iso, parse_iso8601

T0 = 1_750_000_000.0  # a fixed start for the fake clock


class FakeClock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now

    def tick(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "data" / "controller.sqlite")


@pytest.fixture
def ctl(db_path, clock):
    controller = Controller(db_path, clock=clock)
    controller.register_guest("web01", {"os": "debian", "disks": [{"name": "sda"}]}, "0.1.0")
    yield controller
    controller.close()


# -- the table --------------------------------------------------------------------------------

LEGAL = [
    (phases.REGISTERED, phases.FULL_SYNC),
    (phases.FULL_SYNC, phases.CONTINUOUS_SYNC),
    (phases.QUIESCE, phases.FINAL_SYNC),
    (phases.FINAL_SYNC, phases.FIXUP),
    (phases.FIXUP, phases.REPLICA_VM),
    (phases.REPLICA_VM, phases.TOOLS),
    (phases.TOOLS, phases.REPLICA_ON),
    (phases.REPLICA_ON, phases.SOURCE_OFF),
    (phases.SOURCE_OFF, phases.NETWORK),
    (phases.SOURCE_OFF, phases.NEEDS_OPERATOR),
    (phases.NETWORK, phases.COMPLETED),
] + [(phase, phases.FAILED) for phase in phases.PHASES if phase not in phases.TERMINAL]


@pytest.mark.parametrize("from_phase,to_phase", LEGAL)
def test_every_legal_transition_is_accepted(from_phase, to_phase):
    phases.check_transition(from_phase, to_phase)


def test_switchover_transition_needs_its_guard():
    with pytest.raises(IllegalTransition, match="switchover is due"):
        phases.check_transition(phases.CONTINUOUS_SYNC, phases.QUIESCE)
    phases.check_transition(phases.CONTINUOUS_SYNC, phases.QUIESCE,
                            frozenset({phases.SWITCHOVER_IS_DUE}))


ILLEGAL = [
    (phases.REGISTERED, phases.CONTINUOUS_SYNC),
    (phases.REGISTERED, phases.COMPLETED),
    (phases.FULL_SYNC, phases.QUIESCE),
    (phases.CONTINUOUS_SYNC, phases.FULL_SYNC),
    (phases.QUIESCE, phases.CONTINUOUS_SYNC),
    (phases.FINAL_SYNC, phases.QUIESCE),
    (phases.FINAL_SYNC, phases.COMPLETED),
    (phases.FIXUP, phases.COMPLETED),
    (phases.REPLICA_ON, phases.NEEDS_OPERATOR),
    (phases.NEEDS_OPERATOR, phases.NETWORK),
    (phases.NEEDS_OPERATOR, phases.FAILED),
    (phases.COMPLETED, phases.FAILED),
    (phases.FAILED, phases.REGISTERED),
    (phases.COMPLETED, phases.FULL_SYNC),
    (phases.REGISTERED, "rebooting"),
]


@pytest.mark.parametrize("from_phase,to_phase", ILLEGAL)
def test_illegal_transitions_name_both_phases(from_phase, to_phase):
    with pytest.raises(IllegalTransition) as caught:
        phases.check_transition(from_phase, to_phase, frozenset({phases.SWITCHOVER_IS_DUE}))
    assert from_phase in str(caught.value) and to_phase in str(caught.value)
    assert (caught.value.from_phase, caught.value.to_phase) == (from_phase, to_phase)


def test_table_covers_every_phase_and_terminals_lead_nowhere():
    assert set(phases.TRANSITIONS) == set(phases.PHASES)
    for terminal in phases.TERMINAL:
        assert phases.TRANSITIONS[terminal] == {}


# -- guests -----------------------------------------------------------------------------------

def test_register_guest_and_connection_flag(ctl, clock):
    guest = ctl.guest("web01")
    assert guest["inventory"]["os"] == "debian" and guest["agent_version"] == "0.1.0"
    assert guest["connected"] is True and guest["migration_phase"] is None
    clock.tick(5)
    ctl.set_connected("web01", False)
    guest = ctl.guest("web01")
    assert guest["connected"] is False and guest["last_seen"] == iso(T0 + 5)
    assert guest["first_seen"] == iso(T0)
    ctl.register_guest("web01", {"os": "debian 12"}, "0.2.0")  # re-registration updates
    assert ctl.guest("web01")["inventory"] == {"os": "debian 12"}
    assert [g["name"] for g in ctl.guests()] == ["web01"]
    assert ctl.guest("db01") is None
    with pytest.raises(NotFound):
        ctl.set_connected("db01", True)


@pytest.mark.parametrize("bad", ["", "-web", "web/01", "a..b", "web 01", "x" * 200, None, "é"])
def test_guest_names_are_strict(ctl, bad):
    with pytest.raises(InvalidInput):
        ctl.register_guest(bad, {}, None)


def test_inventory_must_be_a_json_object(ctl):
    with pytest.raises(InvalidInput):
        ctl.register_guest("web02", ["not", "an", "object"], None)
    with pytest.raises(InvalidInput):
        ctl.register_guest("web02", {"bad": object()}, None)


# -- migrations -------------------------------------------------------------------------------

def test_happy_path_with_history(ctl, clock):
    started = ctl.start_migration("web01")
    assert started["phase"] == phases.REGISTERED and started["switchover"] == phases.MANUAL
    for step in (phases.FULL_SYNC, phases.CONTINUOUS_SYNC):
        clock.tick(1)
        ctl.advance("web01", step)
    ctl.update_progress("web01", lag=1.5)
    ctl.request_switchover("web01")
    for step in (phases.QUIESCE, phases.FINAL_SYNC, phases.FIXUP, phases.REPLICA_VM, phases.TOOLS,
                 phases.REPLICA_ON, phases.SOURCE_OFF, phases.NETWORK, phases.COMPLETED):
        clock.tick(1)
        ctl.advance("web01", step)
    done = ctl.migration("web01")
    assert done["phase"] == phases.COMPLETED and done["active"] is False
    assert done["lag_at_switchover"] == 1.5
    assert [(h["from"], h["to"]) for h in done["history"]] == [
        (None, "registered"), ("registered", "full_sync"), ("full_sync", "continuous_sync"),
        ("continuous_sync", "quiesce"), ("quiesce", "final_sync"), ("final_sync", "fixup"),
        ("fixup", "replica_vm"), ("replica_vm", "tools"), ("tools", "replica_on"), ("replica_on", "source_off"),
        ("source_off", "network"), ("network", "completed")]
    assert done["history"][-1]["at"] == iso(T0 + 11)
    assert ctl.guest("web01")["migration_phase"] == phases.COMPLETED


def test_migration_needs_a_registered_guest(ctl):
    with pytest.raises(NotFound):
        ctl.start_migration("db01")


def test_one_active_migration_per_guest(ctl):
    first = ctl.start_migration("web01", "manual")
    again = ctl.start_migration("web01", "manual")
    assert again["id"] == first["id"]
    assert ctl.ensure_migration("web01")[1] is False
    with pytest.raises(Conflict, match="already has an active migration"):
        ctl.start_migration("web01", "immediate")
    ctl.abort("web01")
    second, created = ctl.ensure_migration("web01", "immediate")
    assert created and second["id"] != first["id"] and second["phase"] == phases.REGISTERED
    assert [m["id"] for m in ctl.migrations()] == [second["id"]]


def test_fail_and_abort(ctl):
    ctl.start_migration("web01")
    ctl.advance("web01", phases.FULL_SYNC)
    with pytest.raises(InvalidInput):
        ctl.advance("web01", phases.FAILED)  # a failure always says why
    aborted = ctl.abort("web01")
    assert aborted["phase"] == phases.FAILED and aborted["reason"] == "aborted by operator"
    assert aborted["history"][-1] == {"from": "full_sync", "to": "failed",
                                      "at": aborted["updated"], "reason": "aborted by operator"}
    with pytest.raises(IllegalTransition, match="failed -> failed"):
        ctl.abort("web01")
    with pytest.raises(IllegalTransition):
        ctl.advance("web01", phases.FULL_SYNC)
    ctl.start_migration("web01")
    failed = ctl.fail("web01", "disk read error on sda")
    assert failed["reason"] == "disk read error on sda"


def test_illegal_advance_leaves_no_trace(ctl):
    ctl.start_migration("web01")
    with pytest.raises(IllegalTransition, match="registered -> quiesce"):
        ctl.advance("web01", phases.QUIESCE)
    migration = ctl.migration("web01")
    assert migration["phase"] == phases.REGISTERED and len(migration["history"]) == 1


def test_unknown_migration(ctl):
    assert ctl.migration("web01") is None
    with pytest.raises(NotFound):
        ctl.advance("web01", phases.FULL_SYNC)
    assert ctl.switchover_due("web01") is False


# -- switchover -------------------------------------------------------------------------------

def test_manual_switchover_waits_for_the_operator(ctl):
    ctl.start_migration("web01", "manual")
    walk_to_continuous(ctl)
    ctl.update_progress("web01", last_sync_at=T0 + 100)
    assert not ctl.switchover_due("web01", T0 + 10_000)
    with pytest.raises(IllegalTransition, match="continuous_sync -> quiesce"):
        ctl.advance("web01", phases.QUIESCE)
    requested = ctl.request_switchover("web01")
    assert requested["switchover_requested"] and requested["switchover_due"]
    assert ctl.advance("web01", phases.QUIESCE)["phase"] == phases.QUIESCE


def walk_to_continuous(ctl, name="web01"):
    ctl.advance(name, phases.FULL_SYNC)
    ctl.advance(name, phases.CONTINUOUS_SYNC)


def test_request_before_continuous_sync_counts_once_there(ctl):
    ctl.start_migration("web01")
    ctl.request_switchover("web01")
    assert not ctl.switchover_due("web01")  # the replica is not complete yet
    walk_to_continuous(ctl)
    assert ctl.switchover_due("web01")


def test_immediate_switchover_after_the_first_continuous_pass(ctl, clock):
    ctl.start_migration("web01", "immediate")
    ctl.advance("web01", phases.FULL_SYNC)
    ctl.update_progress("web01", last_sync_at=clock.now)  # the full sync's pass does not count
    clock.tick(10)
    ctl.advance("web01", phases.CONTINUOUS_SYNC)
    assert not ctl.switchover_due("web01")
    clock.tick(3)
    ctl.update_progress("web01", last_sync_at=clock.now, lag=0.4)
    assert ctl.switchover_due("web01")
    assert ctl.advance("web01", phases.QUIESCE)["lag_at_switchover"] == 0.4


def test_scheduled_switchover_with_time_zones(ctl):
    at = "2025-06-15T22:00:00+02:00"
    due = dt.datetime(2025, 6, 15, 20, 0, tzinfo=dt.timezone.utc)
    migration = ctl.start_migration("web01", "at", at=at)
    assert migration["switchover_at"] == "2025-06-15T20:00:00.000Z"
    walk_to_continuous(ctl)
    assert not ctl.switchover_due("web01", due - dt.timedelta(seconds=1))
    assert ctl.switchover_due("web01", due)
    assert ctl.switchover_due("web01", "2025-06-15T20:00:01Z")
    # The same settings again are the same migration; another time is a conflict.
    assert ctl.start_migration("web01", "at", at="2025-06-15T20:00:00Z")["id"] == migration["id"]
    with pytest.raises(Conflict):
        ctl.start_migration("web01", "at", at="2025-06-15T21:00:00Z")


def test_reschedule_and_cancel(ctl):
    ctl.start_migration("web01", "immediate")
    walk_to_continuous(ctl)
    rescheduled = ctl.request_switchover("web01", at="2030-01-01T00:00:00Z")
    assert rescheduled["switchover"] == "at" and rescheduled["switchover_at"].startswith("2030-01-01")
    cancelled = ctl.cancel_switchover("web01")
    assert (cancelled["switchover"], cancelled["switchover_at"],
            cancelled["switchover_requested"]) == ("manual", None, False)
    assert not ctl.switchover_due("web01", "2031-01-01T00:00:00Z")
    ctl.request_switchover("web01")
    ctl.advance("web01", phases.QUIESCE)
    with pytest.raises(Conflict, match="can no longer be changed"):
        ctl.cancel_switchover("web01")


@pytest.mark.parametrize("mode,at", [("soon", None), ("at", None), ("manual", "2030-01-01T00:00:00Z"),
                                     ("at", "2030-01-01T00:00:00"), ("at", "tomorrow")])
def test_switchover_settings_are_validated(ctl, mode, at):
    with pytest.raises(InvalidInput):
        ctl.start_migration("web01", mode, at=at)


# -- the scheduled window's end ----------------------------------------------------------------

AT, END = T0 + 100, T0 + 200


@pytest.mark.parametrize("now,due", [
    (AT - 0.001, False),     # before at
    (AT, True),              # at
    (AT + 50, True),         # inside
    (END - 0.001, True),     # the last moment inside
    (END, False),            # exactly at the window's end: not due any more
    (END + 3600, False),     # after
])
def test_a_scheduled_switchover_is_due_only_inside_its_window(now, due):
    assert phases.switchover_due(phases.CONTINUOUS_SYNC, phases.AT, False, AT, True, now, END) is due
    # Whether the first continuous pass is done does not matter to a schedule.
    assert phases.switchover_due(phases.CONTINUOUS_SYNC, phases.AT, False, AT, False, now, END) is due
    assert phases.switchover_window_missed(phases.CONTINUOUS_SYNC, phases.AT, False, END, now) is (now >= END)


def test_without_a_window_end_a_schedule_stays_due():
    assert phases.switchover_due(phases.CONTINUOUS_SYNC, phases.AT, False, AT, True, END + 10**6)
    assert not phases.switchover_due(phases.CONTINUOUS_SYNC, phases.AT, False, AT, True, AT - 1)
    assert not phases.switchover_window_missed(phases.CONTINUOUS_SYNC, phases.AT, False, None, END + 10**6)


def test_an_operators_request_wins_over_a_missed_window():
    assert phases.switchover_due(phases.CONTINUOUS_SYNC, phases.AT, True, AT, False, END + 1, END)
    assert not phases.switchover_window_missed(phases.CONTINUOUS_SYNC, phases.AT, True, END, END + 1)


@pytest.mark.parametrize("phase", [phases.REGISTERED, phases.FULL_SYNC])
def test_a_window_closing_before_continuous_sync_is_missed_too(phase):
    assert not phases.switchover_due(phase, phases.AT, False, AT, True, AT + 1, END)
    assert phases.switchover_window_missed(phase, phases.AT, False, END, END)


@pytest.mark.parametrize("phase", [phases.QUIESCE, phases.FIXUP, phases.COMPLETED, phases.FAILED])
def test_nothing_is_missed_once_the_switchover_has_begun_or_the_migration_ended(phase):
    assert not phases.switchover_due(phase, phases.AT, False, AT, True, AT + 1, END)
    assert not phases.switchover_window_missed(phase, phases.AT, False, END, END + 1)


def test_a_window_is_kept_compared_and_shown(ctl):
    started = ctl.start_migration("web01", "at", at="2030-01-01T02:00:00+01:00",
                                  window_end="2030-01-01T04:00:00+01:00")
    assert (started["switchover_at"], started["switchover_window_end"]) == (
        "2030-01-01T01:00:00.000Z", "2030-01-01T03:00:00.000Z")
    assert started["switchover_window_missed_at"] is None and started["switchover_note"] is None
    same, created = ctl.ensure_migration("web01", "at", "2030-01-01T01:00:00Z", "2030-01-01T03:00:00Z")
    assert not created and same["id"] == started["id"]
    with pytest.raises(Conflict, match="at 2030-01-01T01:00:00.000Z until 2030-01-01T03:00:00.000Z"):
        ctl.start_migration("web01", "at", at="2030-01-01T01:00:00Z")  # no end is another schedule
    with pytest.raises(Conflict):
        ctl.start_migration("web01", "at", at="2030-01-01T01:00:00Z", window_end="2030-01-01T05:00:00Z")


@pytest.mark.parametrize("mode,at,end,message", [
    ("at", "2030-01-01T02:00:00Z", "2030-01-01T02:00:00Z", "must be after at"),
    ("at", "2030-01-01T02:00:00Z", "2030-01-01T03:00:00+02:00", "must be after at"),  # 01:00Z
    ("at", "2030-01-01T02:00:00Z", "2030-01-01T04:00:00", "window_end: time needs a zone"),
    ("at", "2030-01-01T02:00:00Z", "at four", "window_end: not an ISO 8601 time"),
    ("at", "2030-01-01T02:00:00Z", "", "window_end: time must be an ISO 8601 string"),
    ("at", None, "2030-01-01T04:00:00Z", "window_end goes only with a switchover time (at)"),
    ("manual", None, "2030-01-01T04:00:00Z", "window_end goes only with a switchover time (at)"),
    ("immediate", None, "2030-01-01T04:00:00Z", "window_end goes only with a switchover time (at)"),
])
def test_window_end_is_validated(ctl, mode, at, end, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        ctl.start_migration("web01", mode, at=at, window_end=end)
    assert ctl.migration("web01") is None
    ctl.start_migration("web01")
    with pytest.raises(InvalidInput, match=re.escape(message)):
        ctl.request_switchover("web01", at=at, window_end=end)
    assert ctl.migration("web01")["switchover"] == "manual"


def scheduled_in_continuous_sync(ctl, clock, at=AT, end=END):
    ctl.start_migration("web01", "at", at=at, window_end=end)
    walk_to_continuous(ctl)
    clock.tick(1)
    ctl.update_progress("web01", last_sync_at=clock.now, lag=0.7)  # the first continuous pass


def test_the_switchover_starts_inside_the_window(ctl, clock):
    scheduled_in_continuous_sync(ctl, clock)
    assert not ctl.switchover_due("web01")
    with pytest.raises(IllegalTransition):
        ctl.advance("web01", phases.QUIESCE)
    clock.now = AT + 30
    assert ctl.migration("web01")["switchover_due"] is True
    started = ctl.advance("web01", phases.QUIESCE)
    assert started["lag_at_switchover"] == 0.7
    clock.now = END + 60
    assert ctl.migration("web01")["switchover_note"] is None  # begun in time: nothing missed


def test_a_missed_window_waits_for_a_new_time(ctl, clock):
    scheduled_in_continuous_sync(ctl, clock)
    clock.now = END
    missed = ctl.migration("web01")
    assert missed["phase"] == phases.CONTINUOUS_SYNC and missed["switchover_due"] is False
    assert missed["switchover_window_missed_at"] == iso(END)
    assert missed["switchover_note"] == (f"switchover window {iso(AT)} to {iso(END)} missed: "
                                         "waiting for a new time")
    assert not ctl.switchover_due("web01", END + 10_000)
    with pytest.raises(IllegalTransition, match="continuous_sync -> quiesce"):
        ctl.advance("web01", phases.QUIESCE)
    assert ctl.begin_switchover_if_due("web01") is False
    # A reschedule clears it and starts at its own time.
    rescheduled = ctl.request_switchover("web01", at=clock.now + 60, window_end=clock.now + 120)
    assert rescheduled["switchover_note"] is None and rescheduled["switchover_window_missed_at"] is None
    assert rescheduled["switchover_window_end"] == iso(clock.now + 120)
    clock.tick(60)
    assert ctl.advance("web01", phases.QUIESCE)["phase"] == phases.QUIESCE


def test_a_reschedule_without_an_end_drops_the_old_window(ctl, clock):
    scheduled_in_continuous_sync(ctl, clock)
    clock.now = END + 1
    rescheduled = ctl.request_switchover("web01", at=END + 10)
    assert rescheduled["switchover_window_end"] is None and rescheduled["switchover_note"] is None
    assert ctl.switchover_due("web01", END + 10**6)


def test_cancelling_clears_a_missed_window(ctl, clock):
    scheduled_in_continuous_sync(ctl, clock)
    clock.now = END + 1
    assert ctl.migration("web01")["switchover_note"]
    cancelled = ctl.cancel_switchover("web01")
    assert (cancelled["switchover"], cancelled["switchover_at"], cancelled["switchover_window_end"],
            cancelled["switchover_note"]) == ("manual", None, None, None)


def test_an_operators_request_after_a_missed_window_switches_over_now(ctl, clock):
    scheduled_in_continuous_sync(ctl, clock)
    clock.now = END + 3600
    requested = ctl.request_switchover("web01")
    assert requested["switchover_due"] is True and requested["switchover_note"] is None
    assert requested["switchover_window_end"] is None
    assert ctl.advance("web01", phases.QUIESCE)["lag_at_switchover"] == 0.7


def test_a_window_closing_before_continuous_sync_is_noted_and_waits(ctl, clock):
    ctl.start_migration("web01", "at", at=AT, window_end=END)
    ctl.advance("web01", phases.FULL_SYNC)
    clock.now = END + 1
    assert ctl.migration("web01")["switchover_note"].endswith("missed: waiting for a new time")
    ctl.advance("web01", phases.CONTINUOUS_SYNC)
    ctl.update_progress("web01", last_sync_at=clock.now)
    assert not ctl.switchover_due("web01")
    assert ctl.migration("web01")["switchover_note"]


def test_a_switchover_that_was_due_a_moment_ago_does_not_start_after_the_window(ctl, clock):
    """The receiver begins the switchover in one step (begin_switchover_if_due), so a window that
    closes between an earlier look and the move leaves the migration syncing, never failed."""
    scheduled_in_continuous_sync(ctl, clock)
    clock.now = END - 0.01
    assert ctl.switchover_due("web01")
    clock.now = END + 0.01
    assert ctl.begin_switchover_if_due("web01") is False
    assert ctl.migration("web01")["phase"] == phases.CONTINUOUS_SYNC


def test_a_window_end_survives_a_restart(db_path, clock):
    first = Controller(db_path, clock=clock)
    first.register_guest("web01", {"os": "debian"}, "0.1.0")
    first.start_migration("web01", "at", at=AT, window_end=END)
    walk_to_continuous(first)
    first.close()
    second = Controller(db_path, clock=clock)
    assert second.migration("web01")["switchover_window_end"] == iso(END)
    assert second.switchover_due("web01", AT + 1) and not second.switchover_due("web01", END)
    second.close()


# The migrations table as receivers before the window end made it (schema version 1), and as
# the first release made it (no last_error either).
MIGRATIONS_V1 = """
CREATE TABLE migrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, guest TEXT NOT NULL REFERENCES guests(name),
    phase TEXT NOT NULL, phase_since REAL NOT NULL, switchover TEXT NOT NULL, switchover_at REAL,
    switchover_requested INTEGER NOT NULL DEFAULT 0, reason TEXT, created REAL NOT NULL,
    updated REAL NOT NULL, bytes_done INTEGER NOT NULL DEFAULT 0, bytes_total INTEGER,
    files_done INTEGER NOT NULL DEFAULT 0, files_total INTEGER, rate REAL, eta REAL,
    sample_bytes INTEGER, sample_at REAL, last_sync_at REAL, lag REAL, lag_at_switchover REAL,
    last_error TEXT, last_error_at REAL
);
CREATE UNIQUE INDEX migrations_one_active_v2
    ON migrations(guest) WHERE phase NOT IN ('completed', 'needs_operator', 'failed');
"""
MIGRATIONS_FIRST = MIGRATIONS_V1.replace(",\n    last_error TEXT, last_error_at REAL", "").replace(
    "migrations_one_active_v2", "migrations_one_active").replace("'needs_operator', ", "")
OLD_COMMON = """
CREATE TABLE guests (
    name TEXT PRIMARY KEY, inventory TEXT NOT NULL, agent_version TEXT, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, connected INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX migrations_by_guest ON migrations(guest, id);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, migration INTEGER NOT NULL REFERENCES migrations(id),
    from_phase TEXT, to_phase TEXT NOT NULL, at REAL NOT NULL, reason TEXT
);
CREATE INDEX transitions_by_migration ON transitions(migration, id);
"""


@pytest.mark.parametrize("old_migrations", [MIGRATIONS_V1, MIGRATIONS_FIRST], ids=["v1", "first"])
def test_a_database_of_an_older_receiver_keeps_working(db_path, clock, old_migrations):
    import os
    import sqlite3
    from osam.controller.store import SCHEMA_VERSION
    assert "switchover_window_end" not in old_migrations
    os.makedirs(os.path.dirname(db_path))
    with sqlite3.connect(db_path) as old:
        old.executescript(old_migrations + OLD_COMMON + "PRAGMA user_version=1;")
        old.execute("INSERT INTO guests VALUES ('web01', '{\"os\": \"debian\"}', '0.1.0', ?, ?, 1)",
                    (T0, T0))
        old.execute("INSERT INTO migrations(guest, phase, phase_since, switchover, switchover_at,"
                    " created, updated, last_sync_at, lag) VALUES"
                    " ('web01', 'continuous_sync', ?, 'at', ?, ?, ?, ?, 1.5)", (T0, AT, T0, T0, T0 + 1))
        old.execute("INSERT INTO transitions(migration, from_phase, to_phase, at) VALUES"
                    " (1, NULL, 'registered', ?)", (T0,))
    old.close()

    ctl = Controller(db_path, clock=clock)
    kept = ctl.migration("web01")
    assert (kept["phase"], kept["switchover_at"], kept["switchover_window_end"]) == (
        "continuous_sync", iso(AT), None)
    assert kept["last_error"] is None and kept["switchover_note"] is None
    ctl.note_error("web01", "replica disk full")
    rescheduled = ctl.request_switchover("web01", at=AT, window_end=END)
    assert rescheduled["switchover_window_end"] == iso(END)
    assert rescheduled["last_error"] == "replica disk full"
    clock.now = AT
    assert ctl.advance("web01", phases.QUIESCE)["lag_at_switchover"] == 1.5
    ctl.close()
    with sqlite3.connect(db_path) as probe:
        assert probe.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        columns = [row[1] for row in probe.execute("PRAGMA table_info(migrations)")]
    probe.close()
    assert columns.count("switchover_window_end") == 1 and "last_error_at" in columns
    Controller(db_path, clock=clock).close()  # opening it again changes nothing


def test_parse_iso8601():
    assert parse_iso8601("2025-01-01T00:00:00Z") == parse_iso8601("2025-01-01T01:00:00+01:00")
    with pytest.raises(InvalidInput, match="zone"):
        parse_iso8601("2025-01-01T00:00:00")


# -- durability -------------------------------------------------------------------------------

def test_state_survives_a_restart(db_path, clock):
    first = Controller(db_path, clock=clock)
    first.register_guest("web01", {"os": "debian"}, "0.1.0")
    first.start_migration("web01", "at", at="2025-06-15T20:00:00Z")
    walk_to_continuous(first)
    first.update_progress("web01", bytes_done=10, bytes_total=100, lag=2.0)
    before = first.migration("web01")
    first.close()

    second = Controller(db_path, clock=clock)
    after = second.migration("web01")
    assert after == before
    assert after["phase"] == phases.CONTINUOUS_SYNC and len(after["history"]) == 3
    assert after["switchover_at"] == "2025-06-15T20:00:00.000Z"
    assert second.switchover_due("web01", "2025-06-15T20:00:00Z")
    assert not second.switchover_due("web01", "2025-06-15T19:59:59Z")
    assert second.guest("web01")["inventory"] == {"os": "debian"}
    second.close()


def test_database_is_in_wal_mode(db_path, ctl):
    import sqlite3
    with sqlite3.connect(db_path) as probe:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_callers_are_serialised(ctl):
    ctl.start_migration("web01")
    walk_to_continuous(ctl)
    errors = []

    def report(worker):
        try:
            for i in range(50):
                ctl.update_progress("web01", bytes_done=worker * 1000 + i, bytes_total=10**6)
        except Exception as error:  # pragma: no cover - only on failure
            errors.append(error)

    threads = [threading.Thread(target=report, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- progress ---------------------------------------------------------------------------------

def test_rate_and_eta_are_computed_and_smoothed(ctl, clock):
    ctl.start_migration("web01")
    ctl.advance("web01", phases.FULL_SYNC)
    ctl.update_progress("web01", bytes_done=0, bytes_total=1000_000, files_done=0, files_total=10)
    clock.tick(1)
    first = ctl.update_progress("web01", bytes_done=100_000, files_done=1)
    assert first["rate"] == pytest.approx(100_000)
    assert first["eta"] == pytest.approx(9.0)
    clock.tick(1)
    second = ctl.update_progress("web01", bytes_done=400_000)  # a burst: 300 kB in 1 s
    assert 100_000 < second["rate"] < 300_000  # smoothed, not the instant rate
    assert second["eta"] == pytest.approx(600_000 / second["rate"], abs=0.05)
    clock.tick(0.1)
    close = ctl.update_progress("web01", bytes_done=410_000)
    assert close["rate"] == second["rate"]  # too close to the previous sample to count
    clock.tick(1)
    finished = ctl.update_progress("web01", bytes_done=1000_000, files_done=10,
                                   last_sync_at=clock.now, lag=0.0)
    assert finished["eta"] == 0 and finished["files_done"] == 10 and finished["lag"] == 0.0


def test_progress_pure_functions():
    start = next_rate(RateSample(None, None, None), 0, 0.0)
    assert start == RateSample(None, 0, 0.0)
    one = next_rate(start, 1000, 1.0)
    assert one.rate == 1000
    steady = one
    for second in range(2, 200):
        steady = next_rate(steady, 1000 + 5000 * (second - 1), float(second))
    assert steady.rate == pytest.approx(5000, rel=1e-3)  # converges to the new steady rate
    restarted = next_rate(steady, 10, 201.0)  # a new pass resets counters
    assert restarted.rate == steady.rate and restarted.sample_bytes == 10
    assert eta_seconds(50, 100, 10.0) == 5.0
    assert eta_seconds(50, None, 10.0) is None
    assert eta_seconds(50, 100, None) is None


@pytest.mark.parametrize("field,value", [("bytes_done", -1), ("files_total", 1.5),
                                         ("bytes_total", True), ("lag", -2)])
def test_progress_input_is_validated(ctl, field, value):
    ctl.start_migration("web01")
    with pytest.raises(InvalidInput):
        ctl.update_progress("web01", **{field: value})


def test_no_progress_after_the_end(ctl):
    ctl.start_migration("web01")
    ctl.abort("web01")
    with pytest.raises(Conflict):
        ctl.update_progress("web01", bytes_done=1)


def test_a_cutover_stopped_half_way_ends_needing_the_operator_and_frees_the_guest(ctl):
    ctl.start_migration("web01", phases.IMMEDIATE)
    for step in (phases.FULL_SYNC, phases.CONTINUOUS_SYNC):
        ctl.advance("web01", step)
    ctl.request_switchover("web01")
    for step in (phases.QUIESCE, phases.FINAL_SYNC, phases.FIXUP, phases.REPLICA_VM, phases.TOOLS,
                 phases.REPLICA_ON, phases.SOURCE_OFF):
        ctl.advance("web01", step)
    with pytest.raises(InvalidInput, match="needs a reason"):
        ctl.advance("web01", phases.NEEDS_OPERATOR)
    stuck = ctl.advance("web01", phases.NEEDS_OPERATOR, "power off the source, then power on the replica")
    assert stuck["active"] is False and stuck["reason"] == "power off the source, then power on the replica"
    with pytest.raises(IllegalTransition, match="terminal"):
        ctl.advance("web01", phases.NETWORK)
    again = ctl.start_migration("web01")      # the guest may be migrated again
    assert again["phase"] == phases.REGISTERED and again["id"] != stuck["id"]


def test_the_switchover_begins_only_if_due_at_that_very_moment(ctl, clock):
    scheduled_in_continuous_sync(ctl, clock)
    clock.now = AT - 1
    assert ctl.begin_switchover_if_due("web01") is False
    assert ctl.migration("web01")["phase"] == phases.CONTINUOUS_SYNC
    clock.now = AT
    assert ctl.begin_switchover_if_due("web01") is True
    assert ctl.migration("web01")["phase"] == phases.QUIESCE
    assert ctl.begin_switchover_if_due("web01") is False     # begun: nothing more to do
