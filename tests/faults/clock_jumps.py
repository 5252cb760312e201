"""Clock jumps and scheduled switchovers: the receiver's wall clock (common/clock.py, shifted
through OSAM_CLOCK_OFFSET_FILE) jumps as an NTP correction would, while a migration waits in
continuous sync for its maintenance window.

- forward into the window: scheduled an hour ahead, the clock jumps 70 minutes: the switchover
  begins at once, inside the window, and completes;
- forward past the window: the clock jumps beyond the window's end: no switchover; the window is
  reported missed and the guest keeps syncing until an operator switches it over by hand;
- backward: with the switchover 10 minutes away the clock goes back half an hour, then forward
  35 minutes (still before the time): nothing happens early; past the time, it begins, once.
Every replica is compared with its source at the end."""
from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path
from typing import Callable, Optional

from tests.e2e.site import wait_for
from tests.faults.campaigns import TREE_SEED, _work
from tests.faults.harness import FaultSite, compare_tree, quiet, record_comparison, tree_matches
from tests.faults.report import CampaignResult
from tests.util.trees import make_rich_tree, mutate_rich_tree, remove_tree

HOUR = 3600.0


class ReceiverClock:
    def __init__(self, path: Path):
        self.path, self.offset = path, 0.0
        self.set(0.0)

    def set(self, offset: float) -> None:
        self.offset = offset
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset}\n")
        tmp.replace(self.path)

    def jump(self, seconds: float) -> None:
        self.set(self.offset + seconds)
        time.sleep(1.5)                 # the receiver re-reads the offset each second

    def iso_in(self, seconds: float) -> str:
        """The receiver's now plus `seconds`, as the API takes times."""
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.offset + seconds)
        return when.isoformat(timespec="milliseconds")


def _phases(m: dict) -> list:
    return [h["to"] for h in m["history"]]


def _scenario(site: FaultSite, clock: ReceiverClock, name: str, src: Path,
              act: Callable[[FaultSite, ReceiverClock, str], Optional[str]], result: CampaignResult) -> None:
    make_rich_tree(src, seed=TREE_SEED)
    site.start_sentinel(name, src)
    wait_for(lambda: quiet(lambda: site.guest(name)), 60, "registration")
    problem = act(site, clock, name)
    if problem:
        result.mismatches += 1
        result.notes.append(f"{name}: {problem}")
    done = site.wait_phase(name, "completed", 180)
    if _phases(done).count("quiesce") != 1:
        result.mismatches += 1
        result.notes.append(f"{name}: switched over {_phases(done).count('quiesce')} times")
    result.completed += 1
    record_comparison(result, name, compare_tree(src, site.replica(name)))


def _wait_caught_up(site: FaultSite, name: str, src: Path) -> None:
    site.wait_phase(name, "continuous_sync", 120)
    wait_for(lambda: site.migration(name)["last_sync_at"], 60, "the first continuous pass")
    wait_for(lambda: tree_matches(src, site.replica(name)), 60, "the replica to catch up")


def forward_into_window(site, clock, name) -> Optional[str]:
    src = site.base.parent / name
    site.api("POST", "/v1/migrations", {"guest": name, "switchover": "at",
                                        "at": clock.iso_in(HOUR), "window_end": clock.iso_in(2 * HOUR)})
    _wait_caught_up(site, name, src)
    time.sleep(2)
    if site.migration(name)["phase"] != "continuous_sync":
        return "switched over before its time"
    clock.jump(70 * 60)
    return None


def forward_past_window(site, clock, name) -> Optional[str]:
    src = site.base.parent / name
    site.api("POST", "/v1/migrations", {"guest": name, "switchover": "at",
                                        "at": clock.iso_in(HOUR), "window_end": clock.iso_in(HOUR + 600)})
    _wait_caught_up(site, name, src)
    clock.jump(3 * HOUR)
    m = wait_for(lambda: (lambda m: m if m["switchover_window_missed_at"] else None)(site.migration(name)),
                 30, "the window to be reported missed")
    mutate_rich_tree(src)               # still syncing: the changes reach the replica
    wait_for(lambda: tree_matches(src, site.replica(name)), 60, "continuous sync after the missed window")
    if m["phase"] != "continuous_sync" or "quiesce" in _phases(site.migration(name)):
        return f"a missed window still switched over (phase {m['phase']})"
    site.api("POST", f"/v1/migrations/{name}/switchover", {})     # the operator's call
    return None


def backward(site, clock, name) -> Optional[str]:
    src = site.base.parent / name
    site.api("POST", "/v1/migrations", {"guest": name, "switchover": "at", "at": clock.iso_in(600)})
    _wait_caught_up(site, name, src)
    clock.jump(-HOUR / 2)
    clock.jump(35 * 60)                 # 5 minutes on, still 5 before the time: nothing may happen
    time.sleep(2)
    if site.migration(name)["phase"] != "continuous_sync":
        return "switched over before its time after the clock went back"
    clock.jump(10 * 60)
    return None


SCENARIOS = [("jump_into_window", forward_into_window), ("jump_past_window", forward_past_window),
             ("jump_back", backward)]


def run(quick: bool, seed: int) -> CampaignResult:
    rng = random.Random(seed)
    print(f"campaign clock_jumps seed={seed}", flush=True)
    result = CampaignResult("clock_jumps", seed)
    t0 = time.monotonic()
    for label, act in SCENARIOS[:1] if quick else SCENARIOS:
        work = _work(f"clock-{label}")
        site = FaultSite(work / "site", rng.randrange(1 << 30))
        clock = ReceiverClock(work / "clock-offset")
        result.migrations += 1
        result.faults += 1 if act is not backward else 3
        try:
            site.start_receiver(env={"OSAM_CLOCK_OFFSET_FILE": str(clock.path)})
            site.start_gateway()
            _scenario(site, clock, label.replace("_", "-"), work / label.replace("_", "-"), act, result)
        except Exception as e:
            result.mismatches += 1
            result.notes.append(f"{label}: ERROR {type(e).__name__}: {str(e)[:2000]}")
        finally:
            site.stop_all()
            remove_tree(work)
    result.seconds = time.monotonic() - t0
    return result
