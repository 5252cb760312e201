"""Load campaign: many guests at once through one gateway and one receiver, and the bandwidth
limits.

* Load: N sentinels (full 50, quick 8), each its own process with its own certificate and its
  own small tree made from the seed (a few MB in a few hundred files: small and middling
  files, half compressible, symlinks, a hard link, modes and mtimes), migrate at once to tree
  replicas: full sync, changes during continuous sync, switchover for all, until every
  migration is `completed`; then every replica is compared with its source (diff_trees).
  Sentinels start staggered (at most STARTING unregistered at a time): on two cores fifty
  Python processes starting at once spend their time competing for the CPU.
  Notes: aggregate throughput (source bytes / seconds of the full sync phase, from the first
  migration started to the last one in continuous sync), the gateway's and the receiver's
  peak RSS (VmHWM) and the largest sentinel's.
* Bandwidth, measured on the wire between gateway and receiver (a counting TCP proxy; the
  data is random, so lz4 cannot shrink it), over the middle 80% of the bytes of a transfer of
  several seconds: (a) one guest with `osam-sentinel --bandwidth-limit`, (b) several guests at
  once through `osam-gateway --bandwidth-limit`. Each check is a migration that counts as
  completed only when its replica is identical and its rate is within 10% of the limit.

`run(quick, seed)` returns one CampaignResult; `run_all` also returns the measurements.
python -m tests.faults.load [--full] [--seed N] prints the table.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import os
import random
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.e2e.site import Site, wait_for
from tests.faults.proxy import FaultProxy
from tests.faults.report import CampaignResult, table
from tests.util import new_disk_tmpdir
from tests.util.trees import diff_trees, remove_tree, snapshot

GUESTS = {True: 8, False: 50}
FILES = {True: 200, False: 300}
TREE_BYTES = {True: 3 << 20, False: 4 << 20}
STARTING = 4                 # sentinels starting (not yet registered) at once
TOLERANCE = 0.10
GUEST_LIMIT = 10e6           # (a): one guest, --bandwidth-limit 10M
GUEST_BYTES = {True: 40e6, False: 60e6}
GATEWAY_LIMIT = 20e6         # (b): several guests, gateway --bandwidth-limit 20M
GATEWAY_GUESTS = {True: 4, False: 6}
GATEWAY_BYTES_EACH = {True: 20e6, False: 20e6}


@dataclasses.dataclass
class Measure:
    what: str
    limit: float
    measured: float
    nbytes: int
    seconds: float          # of the measured window

    @property
    def ok(self) -> bool:
        return abs(self.measured - self.limit) <= TOLERANCE * self.limit

    def note(self) -> str:
        return (f"{self.what}: limit {self.limit / 1e6:g} MB/s, measured {self.measured / 1e6:.2f} MB/s "
                f"({(self.measured / self.limit - 1):+.1%}) over {self.nbytes / 1e6:.0f} MB in "
                f"{self.seconds:.1f} s{'' if self.ok else '  OUT OF BOUNDS'}")


# ------------------------------------------------------------------ trees

def make_guest_tree(root: Path, seed: int, nfiles: int, total: int) -> None:
    """A small guest tree: mostly small files, some middling ones, half of them compressible;
    nested directories, symlinks, a hard link, an empty file, varied modes and mtimes."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    dirs = [root]
    for i in range(max(3, nfiles // 20)):
        d = rnd.choice(dirs) / f"d{i:03d}"
        d.mkdir()
        dirs.append(d)
    weights = [rnd.paretovariate(1.2) for _ in range(nfiles)]
    scale = total / sum(weights)
    files = []
    for i, w in enumerate(weights):
        size = min(int(w * scale), 1 << 20) if i else 0
        data = rnd.randbytes(size) if i % 2 else (b"osam load %d " % i * (size // 12 + 1))[:size]
        path = rnd.choice(dirs) / f"f{i:04d}.dat"
        path.write_bytes(data)
        os.chmod(path, rnd.choice((0o644, 0o600, 0o755, 0o640)))
        t = 1_600_000_000 + rnd.randrange(10 ** 8)
        os.utime(path, ns=(t * 10 ** 9, t * 10 ** 9 + rnd.randrange(10 ** 9)))
        files.append(path)
    for i in range(3):
        target = rnd.choice(files)
        os.symlink(os.path.relpath(target, dirs[i % len(dirs)]), dirs[i % len(dirs)] / f"link{i}")
    os.link(files[-1], root / "hardlink")


def mutate_guest_tree(root: Path, seed: int) -> int:
    """Changes of every kind while continuous sync runs; returns how many."""
    rnd = random.Random(seed)
    files = sorted(p for p in root.rglob("*.dat") if not p.is_symlink())
    rnd.shuffle(files)
    changes = 0
    for p in files[:5]:                                   # rewrite a part in place
        size = p.stat().st_size
        with open(p, "r+b") as f:
            f.seek(rnd.randrange(size + 1))
            f.write(rnd.randbytes(rnd.randint(1, 20000)))
        changes += 1
    for p in files[5:8]:                                  # append
        with open(p, "ab") as f:
            f.write(b"appended during continuous sync\n" * rnd.randint(1, 500))
        changes += 1
    for p in files[8:11]:                                 # delete (a hard-linked one stays)
        if p.stat().st_nlink == 1:
            p.unlink()
            changes += 1
    for p in files[11:13]:                                # rename
        if p.exists() and p.stat().st_nlink == 1:
            p.rename(p.with_name(p.stem + "-renamed.dat"))
            changes += 1
    for p in files[13:15]:                                # chmod
        if p.exists():
            os.chmod(p, 0o604)
            changes += 1
    new = root / f"new-{seed}"
    new.mkdir()
    for i in range(5):                                    # new files in a new directory
        (new / f"n{i}.dat").write_bytes(rnd.randbytes(rnd.randint(0, 100_000)))
        changes += 1
    return changes


def make_random_tree(root: Path, seed: int, nbytes: float, file_size: int = 2 << 20) -> int:
    """Incompressible files: what the sentinel sends is what crosses the wire."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    n = max(1, int(nbytes) // file_size)
    for i in range(n):
        (root / f"r{i:03d}.bin").write_bytes(rnd.randbytes(file_size))
    return n * file_size


# ------------------------------------------------------------------ measuring

def peak_rss(pid: int) -> int:
    """Bytes: the process's peak resident set (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ByteCounter:
    """Samples a proxy's bytes_up every `interval` seconds on a thread."""

    def __init__(self, proxy: FaultProxy, interval: float = 0.05):
        self.proxy, self.interval = proxy, interval
        self.samples: List[Tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ByteCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), self.proxy.bytes_up))
            if self._stop.wait(self.interval):
                self.samples.append((time.monotonic(), self.proxy.bytes_up))
                return


def middle_rate(samples: List[Tuple[float, int]], low: float = 0.1, high: float = 0.9) -> Tuple[float, int, float]:
    """(bytes a second, bytes, seconds) between the moments `low` and `high` of the bytes
    counted had passed: the start and the tail of a transfer left out."""
    t0, b0 = samples[0]
    total = samples[-1][1] - b0

    def when(fraction: float) -> float:
        goal = b0 + fraction * total
        for (ta, ba), (tb, bb) in zip(samples, samples[1:]):
            if bb >= goal:
                return ta if bb == ba else ta + (tb - ta) * (goal - ba) / (bb - ba)
        return samples[-1][0]

    ta, tb = when(low), when(high)
    nbytes = int((high - low) * total)
    return nbytes / max(tb - ta, 1e-6), nbytes, tb - ta


# ------------------------------------------------------------------ the site

class ApiTimer:
    """The slowest API answer seen: how the receiver's API copes with the load."""
    slowest = 0.0

    @classmethod
    def call(cls, site: Site, method: str, path: str, body=None):
        started = time.monotonic()
        try:
            return site.api(method, path, body)
        finally:
            cls.slowest = max(cls.slowest, time.monotonic() - started)


def start_migration(site: Site, name: str) -> None:
    # 200: a first answer was lost (the client timed out and asked again) but the migration exists
    status, body = ApiTimer.call(site, "POST", "/v1/migrations", {"guest": name, "switchover": "manual"})
    assert status in (200, 201), body


def post_all(site: Site, paths_bodies, threads: int = 8) -> float:
    """POST each (path, body) from `threads` clients at once, each on its own connection (under
    load one answer can take a second: one client after another would stagger the guests);
    seconds taken."""
    token = (site.pki / "api-token").read_text().strip()
    started = time.monotonic()

    def post(item):
        path, body = item
        t = time.monotonic()
        try:
            status, answer = site.api("POST", path, body, token=token)
        finally:
            ApiTimer.slowest = max(ApiTimer.slowest, time.monotonic() - t)
        assert status in (200, 201), answer

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, paths_bodies))
    return time.monotonic() - started


def phase_window(ms: Dict[str, dict], start: str, end: str) -> Tuple[float, float, float]:
    """By the receiver's clock, from the migrations' histories: (seconds from the first
    `start` to the last `end`, median and longest seconds from a guest's `start` to its `end`)."""
    def at(m, phase):
        stamps = [h["at"] for h in m["history"] if h["to"] == phase]
        return datetime.datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")).timestamp() if stamps else None
    pairs = [(at(m, start), at(m, end)) for m in ms.values()]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return 0.0, 0.0, 0.0
    each = sorted(b - a for a, b in pairs)
    return max(b for _, b in pairs) - min(a for a, _ in pairs), each[len(each) // 2], each[-1]


def migrations(site: Site) -> Dict[str, dict]:
    try:
        status, body = ApiTimer.call(site, "GET", "/v1/migrations")
    except OSError:      # timed out under load: ask again next time
        return {}
    assert status == 200, body
    return {m["guest"]: m for m in body["migrations"] if m["active"] or m["phase"] in ("completed", "failed")}


def wait_all(site: Site, names, phases, timeout: float) -> Dict[str, dict]:
    """Until every migration is in one of `phases` or failed; returns them."""
    names, phases = set(names), set(phases)

    def reached():
        ms = migrations(site)
        if all(n in ms and (ms[n]["phase"] in phases or ms[n]["phase"] == "failed") for n in names):
            return ms
        return None
    try:
        return wait_for(reached, timeout, f"{len(names)} migrations to reach {'/'.join(sorted(phases))}", 0.5)
    except AssertionError:
        return migrations(site)


def start_sentinels(site: Site, trees: Dict[str, Path], extra=(), timeout: float = 600) -> float:
    """Start one sentinel per tree, at most STARTING still registering at a time; seconds
    until all registered."""
    started, pending = time.monotonic(), list(trees)
    registering: List[str] = []
    deadline = started + timeout
    while pending or registering:
        registering = [n for n in registering if not (site.guest(n) or {}).get("connected")]
        while pending and len(registering) < STARTING:
            name = pending.pop(0)
            site.start_sentinel(name, trees[name], extra=extra)
            registering.append(name)
        if time.monotonic() > deadline:
            raise AssertionError(f"sentinels not registered after {timeout:.0f}s: {registering}\n{site.dump_logs()}")
        time.sleep(0.1)
    return time.monotonic() - started


def verify(site: Site, trees: Dict[str, Path], result: CampaignResult) -> None:
    for name, tree in trees.items():
        src = snapshot(tree)
        result.files_verified += len(src)
        result.bytes_verified += sum(e.size for e in src.values() if e.kind == "f")
        try:
            diffs = diff_trees(src, site.replica(name))
        except FileNotFoundError as exc:
            diffs = [f"replica missing: {exc}"]
        if diffs:
            result.mismatches += len(diffs)
            result.notes.append(f"{name}: {len(diffs)} differences, first: {diffs[0]}")


# ------------------------------------------------------------------ the campaigns

def load_campaign(base: Path, quick: bool, seed: int) -> CampaignResult:
    n = GUESTS[quick]
    result = CampaignResult(f"load-{n}", seed)
    began = time.monotonic()
    rnd = random.Random(seed)
    trees = {f"load{i:02d}": base / "trees" / f"load{i:02d}" for i in range(n)}
    for i, tree in enumerate(trees.values()):
        make_guest_tree(tree, rnd.randrange(1 << 30), FILES[quick], TREE_BYTES[quick])
    total = sum(e.size for t in trees.values() for e in snapshot(t).values() if e.kind == "f")
    site = Site(base / "site")
    try:
        site.start_receiver(replica_format="tree")
        site.start_gateway()
        registered = start_sentinels(site, trees)
        result.notes.append(f"{n} sentinels started (at most {STARTING} registering at once) and "
                            f"registered in {registered:.1f} s")

        t0 = time.monotonic()
        ApiTimer.slowest = 0.0
        posted = post_all(site, [("/v1/migrations", {"guest": name, "switchover": "manual"}) for name in trees])
        result.migrations = n
        ms = wait_all(site, trees, {"continuous_sync"}, 600 + 20 * n)
        full = time.monotonic() - t0
        result.bytes_sent = sum(m.get("bytes_done") or 0 for m in ms.values())
        synced = [name for name in trees if ms.get(name, {}).get("phase") == "continuous_sync"]
        window, median, longest = phase_window(ms, "full_sync", "continuous_sync")
        result.notes.append(f"full sync of {total / 2**20:.0f} MiB in {full:.1f} s: "
                            f"{total / full / 1e6:.1f} MB/s aggregate ({len(synced)}/{n} in continuous sync; "
                            f"{n} migrations started in {posted:.1f} s; receiver's clock: first full_sync to "
                            f"last continuous_sync {window:.1f} s, one guest's full sync {median:.1f} s median, "
                            f"{longest:.1f} s longest)")

        changes = sum(mutate_guest_tree(trees[name], rnd.randrange(1 << 30)) for name in synced)
        result.faults = 0
        time.sleep(3)       # continuous sync carries some of it; the final sync the rest
        t1 = time.monotonic()
        post_all(site, [(f"/v1/migrations/{name}/switchover", {}) for name in synced])
        ms = wait_all(site, trees, {"completed"}, 300 + 10 * n)
        result.completed = sum(1 for name in trees if ms.get(name, {}).get("phase") == "completed")
        result.notes.append(f"{changes} changes during continuous sync; switchover of all to completed "
                            f"in {time.monotonic() - t1:.1f} s")
        for name, m in sorted(ms.items()):
            if m["phase"] != "completed":
                result.notes.append(f"{name}: {m['phase']} {m.get('reason') or m.get('last_error') or ''}")
        sentinel_peak = max(peak_rss(d.proc.pid) for d in site.sentinels.values() if d.running) \
            if any(d.running for d in site.sentinels.values()) else 0
        result.notes.append(f"peak RSS: gateway {peak_rss(site.gateway.proc.pid) / 2**20:.0f} MiB, "
                            f"receiver {peak_rss(site.receiver.proc.pid) / 2**20:.0f} MiB"
                            + (f", largest sentinel still running {sentinel_peak / 2**20:.0f} MiB"
                               if sentinel_peak else ""))
        result.notes.append(f"slowest API answer during the migrations: {ApiTimer.slowest:.1f} s")
        verify(site, trees, result)
    finally:
        site.stop_all()
        result.seconds = time.monotonic() - began
    return result


def _limited_site(base: Path, gateway_extra=()) -> Tuple[Site, FaultProxy]:
    site = Site(base)
    site.start_receiver(replica_format="tree")
    proxy = FaultProxy(site.receiver_port, name="gateway->receiver", verbose=False).start()
    site.receiver_via = proxy.port
    site.start_gateway(extra=gateway_extra)
    return site, proxy


def _measure_migrations(site: Site, proxy: FaultProxy, trees: Dict[str, Path], what: str, limit: float,
                        result: CampaignResult) -> Measure:
    with ByteCounter(proxy) as counter:
        for name in trees:
            start_migration(site, name)
        ms = wait_all(site, trees, {"continuous_sync"}, 600)
    rate, nbytes, seconds = middle_rate(counter.samples)
    measure = Measure(what, limit, rate, nbytes, seconds)
    result.migrations += len(trees)
    before = result.mismatches
    verify(site, trees, result)
    if result.mismatches == before and measure.ok:
        result.completed += sum(1 for n in trees if ms.get(n, {}).get("phase") == "continuous_sync")
    for n in trees:
        if ms.get(n, {}).get("phase") != "continuous_sync":
            result.notes.append(f"{n}: {ms.get(n, {}).get('phase')} {ms.get(n, {}).get('reason') or ''}")
    result.notes.append(measure.note())
    return measure


def guest_limit_check(base: Path, quick: bool, seed: int, result: CampaignResult) -> Measure:
    """(a) one guest with --bandwidth-limit."""
    tree = base / "trees" / "bwguest"
    make_random_tree(tree, seed, GUEST_BYTES[quick])
    site, proxy = _limited_site(base / "site")
    try:
        start_sentinels(site, {"bwguest": tree}, extra=["--bandwidth-limit", f"{GUEST_LIMIT:.0f}"])
        return _measure_migrations(site, proxy, {"bwguest": tree}, "one guest, osam-sentinel --bandwidth-limit",
                                   GUEST_LIMIT, result)
    finally:
        site.stop_all()
        proxy.stop()


def gateway_limit_check(base: Path, quick: bool, seed: int, result: CampaignResult) -> Measure:
    """(b) several guests through a gateway with --bandwidth-limit."""
    n = GATEWAY_GUESTS[quick]
    trees = {f"bwgw{i}": base / "trees" / f"bwgw{i}" for i in range(n)}
    for i, tree in enumerate(trees.values()):
        make_random_tree(tree, seed + i, GATEWAY_BYTES_EACH[quick])
    site, proxy = _limited_site(base / "site", ["--bandwidth-limit", f"{GATEWAY_LIMIT:.0f}"])
    try:
        start_sentinels(site, trees)
        return _measure_migrations(site, proxy, trees, f"{n} guests, osam-gateway --bandwidth-limit",
                                   GATEWAY_LIMIT, result)
    finally:
        site.stop_all()
        proxy.stop()


def bandwidth_campaign(base: Path, quick: bool, seed: int) -> Tuple[CampaignResult, List[Measure]]:
    result = CampaignResult("bandwidth", seed)
    began = time.monotonic()
    measures = [guest_limit_check(base / "guest", quick, seed, result),
                gateway_limit_check(base / "gateway", quick, seed, result)]
    result.seconds = time.monotonic() - began
    return result, measures


def run_all(quick: bool, seed: int, base: Optional[Path] = None) -> Tuple[List[CampaignResult], List[Measure]]:
    own = base is None
    base = base or new_disk_tmpdir("load")
    try:
        load = load_campaign(base / "load", quick, seed)
        bandwidth, measures = bandwidth_campaign(base / "bandwidth", quick, seed)
        return [load, bandwidth], measures
    finally:
        if own and os.environ.get("OSAM_KEEP_TMP") != "1":
            remove_tree(base)


def run(quick: bool, seed: int) -> CampaignResult:
    """The load campaign with the bandwidth checks folded into its row (a check is a migration
    that completes only when its replica is identical and its rate within 10% of the limit)."""
    (load, bandwidth), _ = run_all(quick, seed)
    for field in ("migrations", "completed", "files_verified", "bytes_verified", "mismatches", "bytes_sent",
                  "seconds"):
        setattr(load, field, getattr(load, field) + getattr(bandwidth, field))
    load.notes.extend(bandwidth.notes)
    return load


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help=f"{GUESTS[False]} guests (default {GUESTS[True]})")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-bandwidth", action="store_true", help="the load campaign only")
    args = p.parse_args(argv)
    quick = not args.full
    if args.no_bandwidth:
        base = new_disk_tmpdir("load")
        try:
            results = [load_campaign(base / "load", quick, args.seed)]
        finally:
            if os.environ.get("OSAM_KEEP_TMP") != "1":
                remove_tree(base)
    else:
        results, _ = run_all(quick, args.seed)
    print(table(results))
    ok = all(r.completed == r.migrations and r.mismatches == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
