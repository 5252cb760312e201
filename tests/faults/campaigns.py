"""The fault campaigns: link cuts, SIGKILLed daemons, a full replica disk, and a link down for
longer than max_retry_interval. Each returns a CampaignResult and ends by comparing every
replica with its source (file mode: diff_trees; block mode: sha256 of the images).

Every random choice comes from random.Random(seed) (the campaign's own, and the proxies',
seeded from it); the seed is printed, and `python -m tests.faults.run --seed N --only NAME`
replays a campaign. See tests/faults/README.md."""
from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict

from tests.e2e.site import wait_for
from tests.faults.harness import (FaultSite, compare_image, compare_tree, image_matches, inject, make_bulk,
                                  make_image, quiet, record_comparison, scribble, tree_matches)
from tests.faults.proxy import UP
from tests.faults.report import CampaignResult
from tests.util import new_disk_tmpdir
from tests.util.trees import diff_trees, make_rich_tree, mutate_rich_tree, remove_tree

TREE_SEED = 1            # the sources are the same in every campaign (so baselines are shared)
FILE_BULK = 12 << 20     # incompressible data beside the rich tree
FINAL_BULK = 3 << 20     # written under the excluded path: only the final sync carries it
IMAGE_SIZE = 48 << 20
LINK_CAP = 12 << 20      # bytes/s on sentinel->gateway: long enough phases to put faults in
FINAL_PHASES = ("quiesce", "final_sync")
PAST_FINAL = ("fixup", "replica_vm", "tools", "replica_on", "source_off", "network", "completed")

_baselines: Dict[str, int] = {}   # mode -> wire bytes up of a fault-free migration


# -- one migration, faults injected through hooks -------------------------------------------
class Scenario:
    """One guest's migration through full, continuous and final sync on a FaultSite.
    `faults(stage, active)` is called in each stage ("full", "continuous", "final") and injects
    what it wants while active() holds; it returns how many faults it made."""

    def __init__(self, site: FaultSite, mode: str, work: Path, name: str):
        self.site, self.mode, self.work, self.name = site, mode, work, name
        self.rng = random.Random(TREE_SEED)     # the source's data and changes: no fault choices
        self.src = work / "guest"
        self.etc = work / "etc"
        self.image = work / "disk0.img"
        self.extra = []
        self.restarts = 0

    # -- source --------------------------------------------------------------------------
    def prepare(self) -> None:
        if self.mode == "file":
            make_rich_tree(self.src, seed=TREE_SEED)
            make_bulk(self.src / "bulk", self.rng, FILE_BULK)
            (self.etc / "etc").mkdir(parents=True)
            (self.etc / "excluded_paths").write_text("/excluded\n")
            (self.etc / "etc" / "sync.params").write_text("max_retry_interval=8\n")
        else:
            make_image(self.image, self.rng, IMAGE_SIZE)
            self.etc.mkdir(parents=True)
            self.extra = ["--mode", "block", "--disk", f"d0={self.image}", "--rescan-interval", "0.5"]

    def change(self, step: int) -> None:
        if self.mode == "file":
            if step == 0:
                mutate_rich_tree(self.src, seed=2)
            d = self.src / "files" / "changes"
            d.mkdir(exist_ok=True)
            (d / f"step{step}").write_bytes(self.rng.randbytes(self.rng.randint(1, 256 << 10)))
        else:
            scribble(self.image, self.rng, 8)

    def last_change(self) -> None:
        if self.mode == "file":
            (self.src / "excluded").mkdir(exist_ok=True)
            (self.src / "excluded" / "last.bin").write_bytes(self.rng.randbytes(FINAL_BULK))
        else:
            scribble(self.image, self.rng, 48, max_len=128 << 10)

    def replica_caught_up(self) -> bool:
        if self.mode == "file":
            return tree_matches(self.src, self.site.replica(self.name), ignore=[b"excluded"])
        return image_matches(self.image, self.site.replica_image(self.name, "d0"))

    def differences(self):
        try:
            if self.mode == "file":
                return diff_trees(self.src, self.site.replica(self.name), ignore=[b"excluded"])
            return self.compare().diffs
        except OSError as e:
            return [repr(e)]

    def compare(self):
        if self.mode == "file":
            return compare_tree(self.src, self.site.replica(self.name))
        return compare_image(self.image, self.site.replica_image(self.name, "d0"))

    # -- daemons -------------------------------------------------------------------------
    def start_receiver(self) -> None:
        self.site.start_receiver(replica_format="tree" if self.mode == "file" else "disk")

    def start_sentinel(self) -> None:
        root = self.src if self.mode == "file" else self.work
        self.site.start_sentinel(self.name, root, self.etc, extra=self.extra)

    # -- the migration -------------------------------------------------------------------
    def run(self, faults: Callable[[str, Callable[[], bool]], int], changes: int = 3) -> int:
        site, name = self.site, self.name
        self.start_receiver()
        site.start_gateway()
        self.start_sentinel()
        wait_for(lambda: quiet(lambda: site.guest(name)), 60, f"{name} to register")
        site.sg.set_bandwidth(LINK_CAP)
        status, body = site.api("POST", "/v1/migrations", {"guest": name, "switchover": "manual"})
        assert status == 201, body
        made = faults("full", lambda: quiet(lambda: site.phase(name)) in (None, "registered", "full_sync"))
        wait_for(lambda: quiet(lambda: site.phase(name)) == "continuous_sync"
                 and quiet(lambda: site.migration(name)["last_sync_at"]), 300, "the first continuous pass")
        for step in range(changes):
            self.change(step)
            made += faults("continuous", lambda: True)
        try:
            wait_for(self.replica_caught_up, 120, "continuous sync to carry the changes")
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.differences()[:8]}\n{site.dump_logs()}") from None
        self.last_change()
        wait_for(lambda: quiet(lambda: site.api("POST", f"/v1/migrations/{name}/switchover", {})[0]) in (200, 202),
                 60, "the switchover request")
        made += faults("final", lambda: quiet(lambda: site.phase(name)) not in PAST_FINAL)
        wait_for(lambda: quiet(lambda: site.phase(name)) == "completed", 300, f"{name} to complete")
        return made


def _work(name: str) -> Path:
    return new_disk_tmpdir(f"faults-{name}")


def baseline(mode: str, seed: int) -> int:
    """Wire bytes sentinel->gateway of the same migration with no fault (measured once per mode)."""
    if mode not in _baselines:
        work = _work(f"baseline-{mode}")
        site = FaultSite(work / "site", seed)
        try:
            sc = Scenario(site, mode, work, f"ref{mode}")
            sc.prepare()
            sc.run(lambda stage, active: 0)
            assert sc.compare().ok, sc.compare().diffs[:5]
            _baselines[mode] = site.wire_bytes_up()
        finally:
            site.stop_all()
            remove_tree(work)
    return _baselines[mode]


def _account(result: CampaignResult, site: FaultSite, sc: Scenario, seed: int) -> None:
    record_comparison(result, sc.name, sc.compare())
    sent = site.wire_bytes_up()
    result.bytes_sent += sent
    result.resent_bytes += max(0, sent - baseline(sc.mode, seed))


def _settle(site: FaultSite, name: str, rng: random.Random) -> None:
    """After a fault: the guest is back (its connections open through both proxies), then a
    little more traffic before the next."""
    wait_for(lambda: site.connected(name) and site.sg.open_connections and site.gr.open_connections,
             90, f"{name} to reconnect")
    time.sleep(rng.uniform(0.05, 0.4))


# -- link cuts ----------------------------------------------------------------------------
def link_cuts(quick: bool, seed: int) -> CampaignResult:
    rng = random.Random(seed)
    print(f"campaign link_cuts seed={seed}", flush=True)
    result = CampaignResult("link_cuts", seed)
    t0 = time.monotonic()
    # Migrations alternate file and block mode until the target is reached: a stage can end
    # before its share of cuts lands (a small tree syncs fast), so the count is of cuts made.
    target, per_migration, most = (8, 4, 4) if quick else (100, 25, 12)
    i = -1
    while result.faults < target and i + 1 < most:
        i += 1
        mode, cuts = ("file", "block")[i % 2], min(per_migration, target - result.faults)
        baseline(mode, seed)
        work = _work(f"cuts-{mode}{i}")
        site = FaultSite(work / "site", rng.randrange(1 << 30))
        name = f"cut{mode}{i}"
        sc = Scenario(site, mode, work, name)
        quota = {"full": cuts // 3 + cuts % 3, "continuous": cuts // 3, "final": cuts // 3}
        left = [cuts]

        def cut_once(stage: str) -> int:
            proxy = rng.choice(site.proxies)
            before = proxy.cuts
            if stage == "continuous" or rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.3))
                proxy.cut_all()
            else:   # at a byte offset in the data stream
                proxy.cut_in(rng.randint(1 << 10, 1 << 20), UP)
                quiet(lambda: wait_for(lambda: proxy.cuts > before or not active_now[0](), 20, "the cut"))
                if proxy.cuts == before and active_now[0]():
                    proxy.cut_all()
            return proxy.cuts - before

        active_now = [lambda: True]

        def faults(stage, active):
            n = quota[stage] if stage != "final" else left[0]
            if stage == "continuous":
                n = min(left[0], max(1, quota[stage] // 3))
                active = lambda: True   # noqa: E731
            active_now[0] = active
            made = inject(min(n, left[0]), active, lambda: cut_once(stage), lambda: _settle_quiet(site, name, rng, active))
            left[0] -= made
            return made

        result.migrations += 1
        try:
            sc.prepare()
            made = sc.run(faults)
            result.faults += made
            result.completed += 1
            _account(result, site, sc, seed)
            result.notes.append(f"{name}: {made} cuts (sg {site.sg.cuts}, gr {site.gr.cuts}), "
                                f"{site.sg.connections} sentinel connections")
        except Exception as e:
            result.mismatches += 1
            result.faults += site.cuts()
            result.notes.append(f"{name}: ERROR {type(e).__name__}: {str(e)[:2000]}")
        finally:
            site.stop_all()
            remove_tree(work)
    result.seconds = time.monotonic() - t0
    return result


def _settle_quiet(site, name, rng, active) -> None:
    """Like _settle, but gives up waiting once the stage is over (the final sync may finish
    while the guest reconnects)."""
    end = time.monotonic() + 90
    while time.monotonic() < end:
        if site.connected(name) and site.sg.open_connections and site.gr.open_connections:
            break
        if not active():
            return
        time.sleep(0.05)
    time.sleep(rng.uniform(0.05, 0.4))


# -- SIGKILL ------------------------------------------------------------------------------
def kills(quick: bool, seed: int) -> CampaignResult:
    rng = random.Random(seed)
    print(f"campaign kills seed={seed}", flush=True)
    result = CampaignResult("sigkill", seed)
    t0 = time.monotonic()
    per_daemon = 1 if quick else 20
    remaining = [v for v in ("sentinel", "gateway", "receiver") for _ in range(per_daemon)]
    rng.shuffle(remaining)
    per_migration, most = (3, 3) if quick else (10, 16)
    totals = {"sentinel": 0, "gateway": 0, "receiver": 0}
    # Migrations alternate file and block mode until every daemon was killed its number of
    # times: kills a stage had no time for (it was over first) go back to the queue.
    i = -1
    while remaining and i + 1 < most:
        i += 1
        batch, remaining = remaining[:per_migration], remaining[per_migration:]
        mode = "file" if i % 2 == 0 else "block"
        baseline(mode, seed)
        work = _work(f"kills-{mode}{i}")
        site = FaultSite(work / "site", rng.randrange(1 << 30))
        name = f"kill{mode}{i}"
        sc = Scenario(site, mode, work, name)
        queue = list(batch)
        stages = ["full", "continuous", "final"]
        # Spread the batch over the stages: how many kills each stage gets.
        share = {s: 0 for s in stages}
        for k in range(len(queue)):
            share[stages[k % 3]] += 1
        killed = {"sentinel": 0, "gateway": 0, "receiver": 0}

        def kill_once(active) -> int:
            if not queue:
                return 0
            time.sleep(rng.uniform(0, 0.8))
            if not active():
                return 0
            victim = queue.pop(0)
            if victim == "sentinel":
                site.sentinels[name].kill()
                sc.start_sentinel()
            elif victim == "gateway":
                site.gateway.kill()
                site.start_gateway()
            else:
                site.receiver.kill()
                sc.start_receiver()
            killed[victim] += 1
            return 1

        def faults(stage, active):
            if stage == "continuous":
                n, active = max(0, share[stage] - (share[stage] * 2 // 3)), (lambda: True)
                share[stage] -= n
            else:
                n = share[stage]
            return inject(n, active, lambda: kill_once(active), lambda: _settle_quiet(site, name, rng, active))

        # The continuous stage is called once per change: spread its kills over the calls.
        result.migrations += 1
        try:
            sc.prepare()
            made = sc.run(faults)
            # Kills the stages had no time for (a phase was over first) happen at the end of
            # nothing: they are not counted as made.
            result.faults += made
            result.completed += 1
            _account(result, site, sc, seed)
            result.notes.append(f"{name}: killed " + ", ".join(f"{k} x{v}" for k, v in killed.items()))
        except Exception as e:
            result.mismatches += 1
            result.faults += sum(killed.values())
            result.notes.append(f"{name}: ERROR {type(e).__name__}: {str(e)[:2000]}")
        finally:
            site.stop_all()
            remove_tree(work)
            remaining = queue + remaining
            for victim, n in killed.items():
                totals[victim] += n
    result.notes.append("in all: killed " + ", ".join(f"{k} x{v}" for k, v in totals.items())
                        + (f"; not killed for lack of time: {len(remaining)}" if remaining else ""))
    result.seconds = time.monotonic() - t0
    return result


# -- receiver disk full -------------------------------------------------------------------
def disk_full(quick: bool, seed: int) -> CampaignResult:
    rng = random.Random(seed)
    print(f"campaign disk_full seed={seed}", flush=True)
    result = CampaignResult("disk_full", seed)
    t0 = time.monotonic()
    rounds = 1 if quick else 3
    for i in range(rounds):
        work = _work(f"diskfull{i}")
        image, mnt = work / "data.img", work / "data-fs"
        mnt.mkdir()
        mounted = False
        site = None
        name = f"full{i}"
        result.migrations += 1
        try:
            subprocess.run(["truncate", "-s", "256M", str(image)], check=True)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(image)], check=True)
            subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
            mounted = True
            site = FaultSite(work / "site", rng.randrange(1 << 30))
            site.data = mnt / "data"
            filler = mnt / "filler"
            st = os.statvfs(mnt)
            room = rng.randint(4, 12) << 20
            subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize - room), str(filler)], check=True)
            src = work / "guest"
            make_rich_tree(src, seed=TREE_SEED)
            make_bulk(src / "bulk", rng, 24 << 20, files=12)
            site.start_all(name, src)
            site.api("POST", "/v1/migrations", {"guest": name, "switchover": "manual"})
            m = wait_for(lambda: (lambda m: m if m["last_error"] else None)(site.migration(name)), 120,
                         "the full disk to show on the migration")
            result.faults += 1
            result.notes.append(f"{name}: phase {m['phase']}, last_error {m['last_error']!r}")
            if "No space left" not in (m["last_error"] or ""):
                result.mismatches += 1
                result.notes.append(f"{name}: the error does not say the disk is full")
            # Whatever landed in the replica is whole: each file equals its source.
            replica = site.replica(name)
            torn = []
            for path in replica.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    rel = path.relative_to(replica)
                    if (src / rel).is_file() and path.read_bytes() != (src / rel).read_bytes():
                        torn.append(str(rel))
            if torn:
                result.mismatches += len(torn)
                result.notes.append(f"{name}: torn files while full: {torn[:5]}")
            filler.unlink()
            wait_for(lambda: quiet(lambda: site.phase(name)) == "continuous_sync", 240, "the sync to resume")
            if site.migration(name)["last_error"] is not None:
                result.mismatches += 1
                result.notes.append(f"{name}: last_error stays after space was freed")
            site.api("POST", f"/v1/migrations/{name}/switchover", {})
            wait_for(lambda: quiet(lambda: site.phase(name)) == "completed", 240, f"{name} to complete")
            result.completed += 1
            record_comparison(result, name, compare_tree(src, replica))
            result.bytes_sent += site.wire_bytes_up()
        except Exception as e:
            result.mismatches += 1
            result.notes.append(f"{name}: ERROR {type(e).__name__}: {str(e)[:2000]}")
        finally:
            if site:
                site.stop_all()
            if mounted:
                subprocess.run(["umount", str(mnt)], check=False)
                if os.path.ismount(mnt):
                    subprocess.run(["umount", "-l", str(mnt)], check=False)
            remove_tree(work)
    result.seconds = time.monotonic() - t0
    return result


# -- link down longer than max_retry_interval ---------------------------------------------
def retry_limit(quick: bool, seed: int) -> CampaignResult:
    rng = random.Random(seed)
    print(f"campaign retry_limit seed={seed}", flush=True)
    result = CampaignResult("retry_limit", seed)
    t0 = time.monotonic()
    work = _work("retry")
    site = FaultSite(work / "site", rng.randrange(1 << 30))
    name = "retry0"
    result.migrations += 1
    try:
        site.start_receiver(env={"OSAM_LINK_TIME_SCALE": "0.001"})   # 1 h = 3.6 s
        site.start_gateway()
        src, etc = work / "guest", work / "etc"
        make_rich_tree(src, seed=TREE_SEED)
        (etc / "etc").mkdir(parents=True)
        (etc / "etc" / "sync.params").write_text("max_retry_interval=1\n")
        site.start_sentinel(name, src, etc)
        wait_for(lambda: quiet(lambda: site.guest(name)), 60, "registration")
        site.api("POST", "/v1/migrations", {"guest": name, "switchover": "manual"})
        site.wait_phase(name, "continuous_sync", 120)
        wait_for(lambda: tree_matches(src, site.replica(name)), 60, "the replica to catch up")
        proxy = rng.choice(site.proxies)
        proxy.set_down(True)
        result.faults += 1
        t_down = time.monotonic()
        failed = wait_for(lambda: (lambda m: m if m["phase"] == "failed" else None)(site.migration(name)),
                          60, "the migration to fail")
        result.notes.append(f"{name}: link down on {proxy.name}; failed after {time.monotonic() - t_down:.1f}s: "
                            f"{failed['reason']!r}")
        if "max_retry_interval" in (failed["reason"] or ""):
            result.completed += 1
        else:
            result.mismatches += 1
        record_comparison(result, name, compare_tree(src, site.replica(name)))   # nothing replicated was lost
        result.bytes_sent = site.wire_bytes_up()
    except Exception as e:
        result.mismatches += 1
        result.notes.append(f"{name}: ERROR {type(e).__name__}: {str(e)[:2000]}")
    finally:
        site.stop_all()
        remove_tree(work)
    result.seconds = time.monotonic() - t0
    return result
