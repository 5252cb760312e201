"""End to end: a switchover scheduled with a window end, across receiver restarts. One begins
inside its window after the receiver was killed between the scheduling and the window; the other's
window closes while the receiver is down, so it keeps syncing and waits until it is given a new time.

Real receiver, gateway and sentinel processes on loopback (tree replicas); the schedule is set
with osamctl as an operator would. Times are compared with the window, never durations."""
import datetime as dt
import json
import time

import pytest

from tests.e2e.site import wait_for
from tests.util.trees import diff_trees, make_rich_tree

pytestmark = pytest.mark.need_root  # owners, device nodes, fanotify


def iso_in(seconds: float) -> str:
    """Now plus `seconds`, ISO 8601 in UTC to the millisecond (as the API keeps times)."""
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return when.isoformat(timespec="milliseconds")


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def switched_at(migration: dict) -> float:
    """When the switchover began: the migration's move to quiesce."""
    return epoch(next(h["at"] for h in migration["history"] if h["to"] == "quiesce"))


def osamctl(site, *args) -> str:
    out = site.osamctl(*args)
    assert out.returncode == 0, f"osamctl {' '.join(args)}: {out.stderr}\n{site.dump_logs()}"
    return out.stdout


def test_the_switchover_begins_inside_its_window_after_a_receiver_restart(site, disk_tmp_path):
    src = disk_tmp_path / "guest"
    make_rich_tree(src)
    site.start_all("sched1", src)
    far, far_end = iso_in(3600), iso_in(7200)  # out of reach: the guest stays in continuous sync
    started = osamctl(site, "migrate", "sched1", "--switchover", f"at={far}", "--window-end", far_end)
    assert "until" in started
    site.wait_phase("sched1", "continuous_sync")

    at, end = iso_in(8), iso_in(60)
    osamctl(site, "switchover", "sched1", "--at", at, "--window-end", end)
    site.receiver.kill()
    site.start_receiver()
    kept = site.migration("sched1")
    assert epoch(kept["switchover_at"]) == epoch(at) and epoch(kept["switchover_window_end"]) == epoch(end)

    done = site.wait_phase("sched1", "completed", 180)
    assert epoch(at) <= switched_at(done) < epoch(end)
    assert [h["to"] for h in done["history"]].count("quiesce") == 1
    assert done["switchover_window_missed_at"] is None and done["switchover_note"] is None
    assert diff_trees(src, site.replica("sched1")) == []


def test_a_window_missed_while_the_receiver_was_down_waits_for_a_new_time(site, disk_tmp_path):
    src = disk_tmp_path / "guest"
    make_rich_tree(src)
    site.start_all("sched2", src)
    osamctl(site, "migrate", "sched2", "--switchover", "manual")
    site.wait_phase("sched2", "continuous_sync")

    at, end = iso_in(6), iso_in(12)
    osamctl(site, "switchover", "sched2", "--at", at, "--window-end", end)
    site.receiver.stop()
    assert time.time() < epoch(at), "the receiver stopped only after the scheduled time: nothing was tested"
    wait_for(lambda: time.time() > epoch(end) + 1, 60, "the window to close", 0.2)
    restarted = time.time()
    site.start_receiver()

    # The guest comes back and finishes a continuous pass: the switchover would be due now but for
    # the window's end.
    def passed_again():
        m = site.migration("sched2")
        return m if m["last_sync_at"] and epoch(m["last_sync_at"]) >= restarted else None
    missed = wait_for(passed_again, 120, "a continuous pass after the restart", 0.2)
    assert missed["phase"] == "continuous_sync" and missed["switchover_due"] is False
    assert epoch(missed["switchover_window_missed_at"]) == epoch(end)
    assert missed["switchover_note"].startswith("switchover window ")
    assert missed["switchover_note"].endswith(" missed: waiting for a new time")

    # It keeps syncing while it waits.
    (src / "written-after-the-window").write_bytes(b"still replicated\n")
    wait_for(lambda: (site.replica("sched2") / "written-after-the-window").exists(), 60,
             "continuous sync after the missed window")
    time.sleep(2)
    still = site.migration("sched2")
    assert still["phase"] == "continuous_sync" and "quiesce" not in [h["to"] for h in still["history"]]
    status = osamctl(site, "status", "sched2")
    assert "(window missed)" in status and "missed: waiting for a new time" in status
    assert json.loads(osamctl(site, "status", "sched2", "--json"))["switchover_note"] == still["switchover_note"]

    new_at = iso_in(2)
    rescheduled = osamctl(site, "switchover", "sched2", "--at", new_at)
    assert "missed" not in rescheduled
    done = site.wait_phase("sched2", "completed", 180)
    assert switched_at(done) >= epoch(new_at)
    assert done["switchover_note"] is None and done["switchover_window_end"] is None
    assert diff_trees(src, site.replica("sched2")) == []
