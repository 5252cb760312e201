#!/usr/bin/env python3
"""Benchmarks in one run on the same tree, with their anchors, printing ratios:

 (a) full sync: osam (sentinel → gateway → receiver, mutual TLS) vs `rsync -aHAXS --numeric-ids`
     over ssh to localhost, both with cold caches;
 (b) final sync after 1% of files changed: osam's switchover (quiesce + final sync, continuous
     sync having run meanwhile) vs rsync's incremental run, cold;
 (c) continuous-sync lag: single small changes (median, p95) and a 500-change burst until the
     replica matches, vs lsyncd (delay = 0); plus checks that a rename travels as a rename and
     that hard links and holes are kept.

Usage: bench/run.py [--files 50000] [--work /var/tmp/osam-bench] [--skip-lsyncd]
Targets: (a) ≤ 0.5×, (b) ≤ 0.25× rsync's time, (c) p95 ≤ 50 ms, burst ≤ 0.5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import anchors  # noqa: E402
from tests.e2e.site import Site, wait_for  # noqa: E402
from tests.util.trees import diff_trees  # noqa: E402

GUEST = "bench"


def cpu_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores, kernel threads included)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_phase(site: Site, phase: str, timeout: float = 3600) -> float:
    t0 = time.perf_counter()
    site.wait_phase(GUEST, phase, timeout)
    return time.perf_counter() - t0


def lag_single(src: Path, replica: Path, n: int) -> list:
    d = src / ".osam-lag"
    d.mkdir(exist_ok=True)
    lags = []
    for i in range(n):
        data = b"%d " % i + os.urandom(64)
        target = replica / ".osam-lag" / f"single-{i:05d}.txt"
        t0 = time.perf_counter()
        (d / target.name).write_bytes(data)
        while True:
            try:
                if target.read_bytes() == data:
                    break
            except OSError:
                pass
            if time.perf_counter() - t0 > 30:
                raise TimeoutError(f"{target.name} not replicated within 30 s")
            time.sleep(0.0005)
        lags.append((time.perf_counter() - t0) * 1000)
    return lags


def lag_burst(src: Path, replica: Path, n: int) -> float:
    d = src / ".osam-lag" / "burst"
    d.mkdir(parents=True, exist_ok=True)
    payloads = {f"b{i:05d}": os.urandom(200) for i in range(n)}
    t0 = time.perf_counter()
    for name, data in payloads.items():
        (d / name).write_bytes(data)
    pending = set(payloads)
    while pending:
        for name in list(pending):
            try:
                if (replica / ".osam-lag" / "burst" / name).read_bytes() == payloads[name]:
                    pending.discard(name)
            except OSError:
                pass
        if time.perf_counter() - t0 > 60:
            raise TimeoutError(f"{len(pending)} burst files not replicated within 60 s")
    return time.perf_counter() - t0


def rename_is_a_rename(site: Site, src: Path, replica: Path) -> dict:
    """Rename the largest file: the replica's inode must stay, and no data must travel."""
    big = max((p for p in src.rglob("big*.img")), key=lambda p: p.stat().st_size)
    rel = big.relative_to(src)
    before_ino = (replica / rel).stat().st_ino
    time.sleep(1.2)  # the last progress report covers what came before
    sent0 = site.migration(GUEST)["bytes_done"]
    new = big.with_name("renamed-" + big.name)
    big.rename(new)
    target = replica / new.relative_to(src)
    wait_for(lambda: target.exists() and not (replica / rel).exists(), 30, "the rename on the replica")
    time.sleep(1.2)  # one progress report
    return {"file_bytes": new.stat().st_size, "same_inode": target.stat().st_ino == before_ino,
            "data_bytes_sent": site.migration(GUEST)["bytes_done"] - sent0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=50000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", default="/var/tmp/osam-bench")
    p.add_argument("--single", type=int, default=100, help="single-change lag samples")
    p.add_argument("--burst", type=int, default=500)
    p.add_argument("--skip-lsyncd", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py needs root (fanotify, foreign owners, dropping caches)", file=sys.stderr)
        return 2
    work = Path(args.work)
    src = work / f"tree-{args.files}-{args.seed}"
    if not (src / ".complete").exists():
        shutil.rmtree(src, ignore_errors=True)
        print(f"== generating {args.files} files at {src}", flush=True)
        anchors.gen_tree(str(src), args.files, args.seed)
        (src / ".complete").write_text("")
    for d in ("site", "rsync-dst", "lsyncd-dst"):
        shutil.rmtree(work / d, ignore_errors=True)
    results = {"files": args.files, "date": time.strftime("%Y-%m-%d %H:%M")}

    print("== (a) full sync: rsync over ssh, cold", flush=True)
    anchors.drop_caches()
    c0 = cpu_busy()
    results["rsync_full_s"] = anchors.rsync_full(str(src), str(work / "rsync-dst"))
    results["rsync_full_cpu_s"] = cpu_busy() - c0

    site = Site(work / "site")
    try:
        site.start_all(GUEST, src)
        replica = site.replica(GUEST)
        print("== (a) full sync: osam, cold", flush=True)
        anchors.drop_caches()
        c0 = cpu_busy()
        site.api("POST", "/v1/migrations", {"guest": GUEST, "switchover": "manual"})
        results["osam_full_s"] = timed_phase(site, "continuous_sync")
        results["osam_full_cpu_s"] = cpu_busy() - c0
        m = site.migration(GUEST)
        results["osam_full_bytes"] = m["bytes_done"]
        full_diff = diff_trees(src, replica, ignore=[b".osam-lag"])
        results["osam_full_identical"] = not full_diff
        if full_diff:
            print("   differences:", *full_diff[:10], sep="\n   ")

        print("== (c) continuous sync lag: osam", flush=True)
        lags = lag_single(src, replica, args.single)
        results["osam_single_ms_median"] = statistics.median(lags)
        results["osam_single_ms_p95"] = sorted(lags)[int(0.95 * (len(lags) - 1))]
        results["osam_burst_s"] = lag_burst(src, replica, args.burst)
        results["osam_rename"] = rename_is_a_rename(site, src, replica)

        print("== (b) 1% change, then switchover (quiesce + final sync): osam", flush=True)
        t0 = time.perf_counter()
        (src / ".complete").unlink()  # a mutated tree is made anew by the next run
        anchors.mutate_tree(str(src), args.seed + 100)
        results["mutate_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        site.api("POST", f"/v1/migrations/{GUEST}/switchover", {})
        site.wait_phase(GUEST, "completed", 600)
        results["osam_final_s"] = time.perf_counter() - t1
        results["osam_final_incl_mutation_s"] = time.perf_counter() - t0
        final_diff = diff_trees(src, replica)
        results["osam_final_identical"] = not final_diff
        if final_diff:
            print("   differences:", *final_diff[:10], sep="\n   ")
    finally:
        site.stop_all()

    print("== (b) 1% change: rsync incremental, cold", flush=True)
    anchors.drop_caches()
    results["rsync_incremental_s"] = anchors.rsync_incremental(str(src), str(work / "rsync-dst"))

    if not args.skip_lsyncd:
        print("== (c) continuous sync lag: lsyncd (delay = 0)", flush=True)
        results["lsyncd"] = anchors.lsyncd_lag(str(src), str(work / "lsyncd-dst"),
                                               n_single=args.single, burst=args.burst)
    anchors.stop_ssh_localhost()
    shutil.rmtree(src / ".osam-lag", ignore_errors=True)

    r = results
    print()
    print(f"osam benchmark, {args.files} files, {r['date']}")
    print(f"(a) full sync      osam {r['osam_full_s']:7.2f} s   rsync {r['rsync_full_s']:7.2f} s"
          f"   ratio {r['osam_full_s'] / r['rsync_full_s']:.2f} (target <= 0.5)")
    print(f"    machine CPU busy during the full sync: osam {r['osam_full_cpu_s']:.1f} s,"
          f" rsync {r['rsync_full_cpu_s']:.1f} s (of {os.cpu_count()} cores)")
    print(f"(b) final sync     osam {r['osam_final_s']:7.2f} s   rsync {r['rsync_incremental_s']:7.2f} s"
          f"   ratio {r['osam_final_s'] / r['rsync_incremental_s']:.2f} (target <= 0.25)")
    line = (f"(c) lag            osam median {r['osam_single_ms_median']:.1f} ms, p95 {r['osam_single_ms_p95']:.1f} ms,"
            f" burst {r['osam_burst_s']:.3f} s")
    if "lsyncd" in r:
        ls = r["lsyncd"]
        line += (f"   lsyncd median {ls.get('single_ms_median', float('nan')):.1f} ms,"
                 f" p95 {ls.get('single_ms_p95', float('nan')):.1f} ms, burst {ls.get('burst_s', float('nan')):.3f} s")
    print(line)
    rn = r["osam_rename"]
    print(f"    rename of a {rn['file_bytes']} byte file: same inode {rn['same_inode']},"
          f" data sent {rn['data_bytes_sent']} bytes")
    print(f"    replica identical after full sync {r['osam_full_identical']}, after final sync {r['osam_final_identical']}")
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0 if r["osam_full_identical"] and r["osam_final_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
