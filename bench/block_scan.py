#!/usr/bin/env python3
"""Block-mode benchmark: whole-disk scans and changed-block passes, with their anchors, in one run.

 1. cold-cache scan vs plain read of the same image: BlockScanner (reader thread, xxh3-128 per
    1 MiB block, zero flags, pages released behind it) against a sequential ``readinto`` of
    8 MiB chunks and nothing else; alternated over --reps repetitions, median ratio scan/read
    (target >= 0.90); for context, the same read dropping its pages behind it (the disk's own
    rate, see bench/README.md on this VM's page cache) and a warm-cache pair;
 2. hash throughput on 1 MiB blocks in memory: xxh3-128, BLAKE3 (the ``blake3`` package, if
    installed), sha256, and what two threads hashing at once reach (about 2x if the GIL is let go);
 3. bytes on the wire for one continuous pass after 1% of the 1 MiB blocks changed: full sync
    through BlockReplicator -> DataLink/FramedStream over a socketpair -> the receiver's Applier
    and BlockStore into a replica image, the change, one pass with lz4 off; ratio wire/changed
    bytes (target <= 1.1), the pass's time, replica sha256 == source sha256; then a second case,
    1% of the image's bytes changed in scattered 4 KiB writes (16 KiB pieces of blocks travel);
 4. the anchor for 3: ``rsync --inplace --no-whole-file --ignore-times --stats`` of the changed image onto a
    copy of the old one on local disk, bytes sent and time, for both cases.

The image (default 2 GiB: 35% random, 35% compressible text-like data, 15% written zeros, 15%
holes, in 1 MiB blocks) is written once and kept in bench/out/ keyed by size and seed.

Usage: bench/block_scan.py [--size 2G] [--seed 1] [--reps 3] [--settle 3] [--work bench/out] [--skip-rsync]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemons" / "src"))

from osam.common import blockscan  # noqa: E402
from osam.common.blockscan import BlockScanner, DiskSource  # noqa: E402
from osam.protocol import CHANNEL_DATA  # noqa: E402
from osam.protocol.frames import FLAG_LZ4, HEADER  # noqa: E402
from osam.protocol.messages import FileData  # noqa: E402
from osam.receiver.applier import Applier  # noqa: E402
from osam.receiver.blockstore import BlockStore  # noqa: E402
from osam.receiver.checkpoint import CheckpointJournal  # noqa: E402
from osam.sentinel.block_replicator import BlockDiskSpec, BlockReplicator  # noqa: E402
from osam.sentinel.config import SentinelConfig  # noqa: E402
from osam.sentinel.datalink import DataLink  # noqa: E402
from osam.transport.framed import FramedStream, LinkClosed  # noqa: E402

MiB = 1 << 20
BLOCK = blockscan.DEFAULT_BLOCK
READ_CHUNK = 8 * MiB
PAGE = 4096


def mb_s(nbytes: int, seconds: float) -> float:
    return nbytes / max(seconds, 1e-9) / 1e6


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    size = int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]
    if size < 16 * MiB or size % MiB:
        raise argparse.ArgumentTypeError("the size must be a multiple of 1 MiB, at least 16 MiB")
    return size


# --------------------------------------------------------------------------- the image
def _text_corpus(rnd: random.Random) -> bytes:
    """64 KiB of text-like bytes (words from a small vocabulary): what lz4 shrinks about 2x."""
    letters = b"abcdefghijklmnopqrstuvwxyz"
    words = [bytes(rnd.choice(letters) for _ in range(rnd.randint(2, 10))) for _ in range(400)]
    out = bytearray()
    while len(out) < 64 << 10:
        out += rnd.choice(words) + (b"\n" if rnd.random() < 0.1 else b" ")
    return bytes(out[:64 << 10])


def compressible_block(rnd: random.Random, corpus: bytes, size: int = BLOCK) -> bytes:
    out = bytearray()
    while len(out) < size:
        start = rnd.randrange(len(corpus) - 4096)
        out += corpus[start:start + rnd.randint(512, 4096)]
        out += rnd.randbytes(rnd.randint(0, 64))
    return bytes(out[:size])


def make_image(path: Path, size: int, seed: int) -> dict:
    """Per 1 MiB block: 35% random, 35% compressible, 15% written zeros, 15% holes."""
    rnd = random.Random(seed)
    corpus = _text_corpus(rnd)
    counts = {"random": 0, "compressible": 0, "zeros": 0, "hole": 0}
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.truncate(size)
        for block in range(size // BLOCK):
            x = rnd.random()
            kind = "random" if x < 0.35 else "compressible" if x < 0.70 else "zeros" if x < 0.85 else "hole"
            counts[kind] += 1
            if kind == "hole":
                continue
            data = (rnd.randbytes(BLOCK) if kind == "random" else compressible_block(rnd, corpus)
                    if kind == "compressible" else bytes(BLOCK))
            os.pwrite(f.fileno(), data, block * BLOCK)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)
    return counts


def ensure_image(out: Path, size: int, seed: int) -> Path:
    path = out / f"block-image-{size >> 20}M-seed{seed}.img"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and path.stat().st_size == size:
        return path
    print(f"== writing the {size >> 20} MiB image {path}", flush=True)
    t0 = time.perf_counter()
    counts = make_image(path, size, seed)
    meta.write_text(json.dumps({"size": size, "seed": seed, "blocks": counts}))
    print(f"   {counts} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def sha256_file(path) -> str:
    h = hashlib.sha256()
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def copy_sparse(src, dst) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=never", str(src), str(dst)], check=True)


# --------------------------------------------------------------------------- caches
_CAN_DROP: bool | None = None


def cold(path) -> str:
    """Empty the page cache of `path`: drop_caches as root, else fadvise(DONTNEED). Returns which."""
    global _CAN_DROP
    os.sync()
    if _CAN_DROP is not False:
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            _CAN_DROP = True
            return "drop_caches"
        except OSError:
            _CAN_DROP = False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return "fadvise"


# --------------------------------------------------------------------------- 1. scan vs read
def plain_read(path) -> float:
    """The anchor: sequential readinto of one preallocated 8 MiB buffer, nothing else."""
    buf = bytearray(READ_CHUNK)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def read_drop_behind(path) -> float:
    """Context: the same read, each chunk's pages dropped once read (what the scanner does), so
    the page cache does not grow: the disk's own rate, without the cost of filling the cache."""
    buf = bytearray(READ_CHUNK)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        off = 0
        while n := f.readinto(buf):
            os.posix_fadvise(f.fileno(), off, n, os.POSIX_FADV_DONTNEED)
            off += n
    return time.perf_counter() - t0


def block_scan(path, **kw) -> float:
    """BlockScanner as the sentinel runs it: every chunk hashed, flagged and released."""
    source = DiskSource("bench", str(path))
    t0 = time.perf_counter()
    try:
        blocks = 0
        for chunk in BlockScanner(source, BLOCK, **kw).chunks():
            blocks += len(chunk.digests)
            chunk.release()
    finally:
        source.close()
    elapsed = time.perf_counter() - t0
    assert blocks == -(-source.size // BLOCK)
    return elapsed


SCAN_OPS = (("read", plain_read), ("scan", block_scan), ("read_drop", read_drop_behind))


def bench_scan(image: Path, size: int, reps: int, settle: float) -> dict:
    res: dict = {f"{k}_{c}": [] for k, _ in SCAN_OPS for c in ("cold", "warm", "cpu")}
    method = None
    for i in range(reps):
        order = SCAN_OPS[i % 3:] + SCAN_OPS[:i % 3]      # each one goes first, second, third
        for kind, fn in order:
            method = cold(image)
            time.sleep(settle)
            c0 = time.process_time()
            t = fn(image)
            res[f"{kind}_cpu"].append(time.process_time() - c0)
            res[f"{kind}_cold"].append(mb_s(size, t))
            print(f"   cold {kind:9s} #{i + 1}: {mb_s(size, t):6.0f} MB/s ({t:.2f} s, "
                  f"{res[f'{kind}_cpu'][-1]:.2f} s CPU)", flush=True)
    res["cache"] = method
    # Warm: the image is read into the page cache first (the scan drops pages behind it as
    # the sentinel does, so it is warmed again before each run).
    for kind, fn in SCAN_OPS[:2]:
        plain_read(image)
        t = fn(image)
        res[f"{kind}_warm"].append(mb_s(size, t))
        print(f"   warm {kind:9s}   : {mb_s(size, t):6.0f} MB/s ({t:.2f} s)", flush=True)
    med = statistics.median
    res["ratio_cold"] = [s / r for s, r in zip(res["scan_cold"], res["read_cold"])]
    res["ratio_cold_median"] = med(res["scan_cold"]) / med(res["read_cold"])
    res["ratio_drop_median"] = med(res["scan_cold"]) / med(res["read_drop_cold"])
    res["ratio_warm"] = res["scan_warm"][0] / res["read_warm"][0]
    return res


# --------------------------------------------------------------------------- 2. hashes
def _rate(fn, blocks, seconds: float = 0.4) -> float:
    """MB/s hashing the blocks one after another (64 MiB of them: memory, not the CPU's caches)."""
    n, t0 = 0, time.perf_counter()
    while True:
        for b in blocks:
            fn(b)
        n += len(blocks)
        t = time.perf_counter() - t0
        if t >= seconds:
            return n * len(blocks[0]) / t / 1e6


def _two_threads(fn, data, seconds: float = 0.4) -> float:
    """Throughput of two threads hashing at once, both counted: ~2x one thread if the GIL is let go."""
    rates = [0.0, 0.0]

    def run(i):
        rates[i] = _rate(fn, data, seconds)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(rates)


def bench_hashes(reps: int) -> dict:
    import xxhash
    mem = memoryview(random.Random(7).randbytes(64 * MiB))
    data = [mem[i:i + BLOCK] for i in range(0, len(mem), BLOCK)]
    fns = {"xxh3-128": lambda b: xxhash.xxh3_128_digest(b),
           "sha256": lambda b: hashlib.sha256(b).digest()}
    try:
        import blake3
        fns["blake3"] = lambda b: blake3.blake3(b).digest()
        fns["blake3 (max_threads=AUTO)"] = lambda b: blake3.blake3(b, max_threads=blake3.blake3.AUTO).digest()
    except ImportError:
        print("   blake3 is not installed (pip install -r requirements/dev.txt): its rows are skipped")
    order = ["xxh3-128", "blake3", "blake3 (max_threads=AUTO)", "sha256"]
    res = {}
    for name in [n for n in order if n in fns]:
        one = statistics.median(_rate(fns[name], data) for _ in range(reps))
        two = _two_threads(fns[name], data)
        res[name] = {"mb_s": one, "two_threads_mb_s": two}
        print(f"   {name:26s} {one:8.0f} MB/s one thread, {two:8.0f} MB/s two threads", flush=True)
    return res


# --------------------------------------------------------------------------- 3. replication
class CountingStream(FramedStream):
    """The sentinel's stream, counting data frames and lz4 frames; `compress=False` keeps lz4 off
    whatever the link looks like."""

    def __init__(self, *a, compress: bool, **kw):
        super().__init__(*a, **kw)
        self.compress = compress
        self.frames = self.data_frames = self.lz4_frames = self.lz4_data_frames = 0
        if not compress:
            self.link_bound = False

    def queue_frame(self, frame: bytes) -> None:
        _length, ftype, flags = HEADER.unpack_from(frame)
        self.frames += 1
        data = ftype == FileData.TYPE
        self.data_frames += data
        if flags & FLAG_LZ4:
            self.lz4_frames += 1
            self.lz4_data_frames += data
        super().queue_frame(frame)

    def _judge_link(self, drain_started: float) -> None:
        super()._judge_link(drain_started)
        if not self.compress:
            self.link_bound = False


async def _serve(peer: FramedStream, applier: Applier) -> None:
    try:
        while True:
            msg = await peer.recv()
            for reply in applier.handle(msg):
                await peer.send(reply() if callable(reply) else reply)
    except LinkClosed:
        await peer.close()


class Replication:
    """One guest disk (`source`) and its replica image, a sentinel and a receiver in this process,
    a fresh socketpair connection per sync as after a reconnect."""

    def __init__(self, work: Path, source: Path, size: int):
        self.source, self.size = source, size
        self.image = work / "replica.raw"
        self.state = work / "state"
        self.journal = str(work / "checkpoint.json")
        shutil.rmtree(self.state, ignore_errors=True)
        for p in (self.image, Path(self.journal)):
            p.unlink(missing_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(size)
        self.spec = BlockDiskSpec("d0", str(source), size)

    def run(self, action, compress: bool) -> dict:
        async def go():
            r = BlockReplicator([self.spec], SentinelConfig(), str(self.state), BLOCK, rescan_interval=0.05)
            store = BlockStore({"d0": str(self.image)})
            a, b = socket.socketpair()
            r1, w1 = await asyncio.open_connection(sock=a)
            r2, w2 = await asyncio.open_connection(sock=b)
            stream = CountingStream(r1, w1, CHANNEL_DATA, compress=compress)
            link = DataLink(stream, r.index, lambda p: None)
            peer = FramedStream(r2, w2, CHANNEL_DATA)
            server = asyncio.ensure_future(_serve(peer, Applier("bench", store, CheckpointJournal(self.journal))))
            marks: dict = {}
            t0 = time.perf_counter()
            try:
                result = await action(r, link, marks)
                elapsed = time.perf_counter() - t0
            finally:
                await link.close()
                await peer.close()
                server.cancel()
                store.close()
            return {"seconds": elapsed,
                    "first_pass_s": marks["first_pass"] - t0 if "first_pass" in marks else elapsed,
                    "bytes_out": stream.bytes_out, "frames": stream.frames, "data_frames": stream.data_frames,
                    "lz4_frames": stream.lz4_frames, "lz4_data_frames": stream.lz4_data_frames,
                    "stats": result}
        return asyncio.run(go())

    def full_sync(self, compress: bool = True) -> dict:
        return self.run(lambda r, link, marks: r.full_sync(link, 1, None), compress)

    def one_pass(self, compress: bool = False) -> dict:
        async def action(r, link, marks):
            stop = asyncio.Event()

            def done():
                marks["first_pass"] = time.perf_counter()
                stop.set()
            return await r.continuous_sync(link, 2, stop, first_pass_done=done)
        return self.run(action, compress)

    def identical(self) -> bool:
        return sha256_file(self.source) == sha256_file(self.image)


def change_blocks(path: Path, size: int, fraction: float, seed: int) -> dict:
    """Rewrite `fraction` of the 1 MiB blocks (random ones) with new random data."""
    rnd = random.Random(seed)
    nblocks = size // BLOCK
    blocks = sorted(rnd.sample(range(nblocks), max(1, round(nblocks * fraction))))
    with open(path, "r+b") as f:
        for b in blocks:
            os.pwrite(f.fileno(), rnd.randbytes(BLOCK), b * BLOCK)
        os.fsync(f.fileno())
    return {"writes": len(blocks), "write_size": BLOCK, "changed_bytes": len(blocks) * BLOCK,
            "offsets": [b * BLOCK for b in blocks]}


def change_pages(path: Path, size: int, fraction: float, seed: int, page: int = PAGE) -> dict:
    """Rewrite `fraction` of the image's bytes as scattered, distinct 4 KiB pages of random data."""
    rnd = random.Random(seed)
    npages = size // page
    pages = sorted(rnd.sample(range(npages), max(1, round(npages * fraction))))
    with open(path, "r+b") as f:
        for p in pages:
            os.pwrite(f.fileno(), rnd.randbytes(page), p * page)
        os.fsync(f.fileno())
    return {"writes": len(pages), "write_size": page, "changed_bytes": len(pages) * page,
            "offsets": [p * page for p in pages]}


def blocks_touched(offsets, write_size: int, block: int) -> int:
    return len({o // block for off in offsets for o in range(off, off + write_size, min(write_size, block))})


def replication_case(repl: Replication, name: str, change: dict, rsync_copy: Path | None) -> dict:
    cold(repl.source)
    p = repl.one_pass(compress=False)
    changed = change["changed_bytes"]
    res = {"case": name, "writes": change["writes"], "write_size": change["write_size"],
           "changed_bytes": changed, "wire_bytes": p["bytes_out"], "ratio": p["bytes_out"] / changed,
           "blocks_sent": p["stats"].get("blocks_sent") if isinstance(p["stats"], dict) else None,
           "data_frames": p["data_frames"], "lz4_frames": p["lz4_frames"], "pass_s": p["first_pass_s"],
           "sync_s": p["seconds"], "identical": repl.identical(),
           # What travels for the same writes at other block sizes (whole blocks, computed).
           "would_send": {bs: blocks_touched(change["offsets"], change["write_size"], bs) * bs
                          for bs in (64 << 10, 256 << 10, 1 << 20)}}
    if rsync_copy is not None:
        res["rsync"] = rsync_anchor(repl.source, rsync_copy)
    return res


# --------------------------------------------------------------------------- 4. rsync anchor
def rsync_anchor(new: Path, old_copy: Path) -> dict:
    cold(new)
    t0 = time.perf_counter()
    p = subprocess.run(["rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats", str(new), str(old_copy)],
                       capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - t0

    def stat(label: str) -> int:
        m = re.search(rf"^{label}: ([\d,]+)", p.stdout, re.M)
        return int(m.group(1).replace(",", "")) if m else -1
    return {"seconds": elapsed, "sent": stat("Total bytes sent"), "received": stat("Total bytes received"),
            "literal": stat("Literal data"), "matched": stat("Matched data"),
            "identical": sha256_file(new) == sha256_file(old_copy)}


# --------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=2 << 30, help="image size (default 2G)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reps", type=int, default=3, help="cold repetitions of each of read and scan")
    p.add_argument("--work", default=str(REPO / "bench" / "out"))
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds to wait after emptying the page cache (see bench/README.md)")
    p.add_argument("--skip-rsync", action="store_true")
    args = p.parse_args()
    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    size = args.size
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "size": size, "seed": args.seed,
                     "block": BLOCK, "scan_chunk": blockscan.CHUNK, "scan_depth": blockscan.DEPTH}
    image = ensure_image(out, size, args.seed)

    print(f"== 1. cold-cache scan vs plain read, {size >> 20} MiB, {args.reps} repetitions each", flush=True)
    results["scan"] = sc = bench_scan(image, size, args.reps, args.settle)
    print(f"   page cache emptied with {sc['cache']}", flush=True)

    print("== 2. hash throughput, 1 MiB blocks in memory", flush=True)
    results["hashes"] = bench_hashes(args.reps)

    print("== 3. block replication over a socketpair (sentinel -> receiver, same process)", flush=True)
    work = out / f"block-repl-{size >> 20}M-seed{args.seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    source = work / "source.img"
    copy_sparse(image, source)
    repl = Replication(work, source, size)
    cold(source)
    full = repl.full_sync(compress=True)
    results["full_sync"] = fs = {"seconds": full["seconds"], "wire_bytes": full["bytes_out"],
                                 "data_frames": full["data_frames"], "lz4_data_frames": full["lz4_data_frames"],
                                 "identical": repl.identical()}
    print(f"   full sync: {fs['seconds']:.2f} s, {fs['wire_bytes'] / 1e6:.0f} MB on the wire, "
          f"{fs['data_frames']} data frames ({fs['lz4_data_frames']} lz4, the link's own choice), "
          f"replica identical {fs['identical']}", flush=True)
    rsync_copy = None
    if not args.skip_rsync:
        if not shutil.which("rsync"):
            print("   rsync not found: the anchor is skipped", flush=True)
        else:
            rsync_copy = work / "rsync-copy.img"
            copy_sparse(source, rsync_copy)
    cases = []
    for name, fn, seed in (("1% of 1 MiB blocks", change_blocks, args.seed + 1),
                           ("1% of bytes, 4 KiB writes", change_pages, args.seed + 2)):
        change = fn(source, size, 0.01, seed)
        c = replication_case(repl, name, change, rsync_copy)
        cases.append(c)
        print(f"   {name}: {c['writes']} writes of {c['write_size']} B = {c['changed_bytes'] / 1e6:.1f} MB changed, "
              f"{c['wire_bytes'] / 1e6:.1f} MB on the wire ({c['data_frames']} data frames, {c['lz4_frames']} lz4), "
              f"ratio {c['ratio']:.3f}, pass {c['pass_s']:.2f} s (sync end {c['sync_s']:.2f} s), "
              f"identical {c['identical']}", flush=True)
        if "rsync" in c:
            rs = c["rsync"]
            print(f"   rsync anchor: {rs['seconds']:.2f} s, sent {rs['sent'] / 1e6:.1f} MB (literal "
                  f"{rs['literal'] / 1e6:.1f} MB), received {rs['received'] / 1e6:.1f} MB, identical {rs['identical']}",
                  flush=True)
    results["cases"] = cases
    shutil.rmtree(work, ignore_errors=True)

    # ---- the table
    med = statistics.median
    print()
    print(f"osam block-mode benchmark, {size >> 20} MiB image (seed {args.seed}), {results['date']}, "
          f"{os.cpu_count()} cores; scanner chunk {blockscan.CHUNK >> 20} MiB, depth {blockscan.DEPTH}")
    print(f"1. scan vs read, MB/s ({sc['cache']} and {args.settle:g} s before each cold run)")
    cols = (("read", "plain read (anchor)"), ("scan", "BlockScanner"), ("read_drop", "read, drop-behind"))
    print(f"   {'':14s}" + "".join(f"{title:>26s}" for _, title in cols))
    print(f"   {'cold, each':14s}" + "".join(f"{' '.join(f'{x:5.0f}' for x in sc[k + '_cold']):>26s}" for k, _ in cols))
    print(f"   {'cold, median':14s}" + "".join(f"{med(sc[k + '_cold']):26.0f}" for k, _ in cols))
    print(f"   {'CPU s, median':14s}" + "".join(f"{med(sc[k + '_cpu']):26.2f}" for k, _ in cols))
    print(f"   {'warm':14s}" + "".join(f"{sc[k + '_warm'][0]:26.0f}" for k, _ in cols[:2]))
    each = ", ".join(f"{x:.2f}" for x in sc["ratio_cold"])
    print(f"   scan/read cold: median {sc['ratio_cold_median']:.2f} (each {each}; target >= 0.90);"
          f" scan/read-drop-behind cold {sc['ratio_drop_median']:.2f}; scan/read warm {sc['ratio_warm']:.2f}")
    print("2. hashes on 1 MiB blocks (MB/s)      one thread   two threads")
    for name, h in results["hashes"].items():
        print(f"   {name:32s}{h['mb_s']:10.0f}{h['two_threads_mb_s']:14.0f}")
    if "blake3" not in results["hashes"]:
        print("   blake3                          (not installed: skipped)")
    print("3. changed blocks on the wire (lz4 off)")
    print(f"   {'case':28s}{'changed MB':>11s}{'wire MB':>9s}{'ratio':>8s}{'pass s':>8s}{'lz4':>5s}{'same':>6s}"
          f"{'rsync s':>9s}{'rsync sent MB':>15s}")
    for c in cases:
        rs = c.get("rsync")
        print(f"   {c['case']:28s}{c['changed_bytes'] / 1e6:11.1f}{c['wire_bytes'] / 1e6:9.1f}{c['ratio']:8.3f}"
              f"{c['pass_s']:8.2f}{c['lz4_frames']:5d}{str(c['identical']):>6s}"
              + (f"{rs['seconds']:9.2f}{rs['sent'] / 1e6:15.1f}" if rs else f"{'-':>9s}{'-':>15s}"))
    pc = cases[1]
    print(f"   the same {pc['writes']} writes of 4 KiB would send, in whole blocks: " + ", ".join(
        f"{n / 1e6:.0f} MB at {bs >> 10} KiB ({n / pc['changed_bytes']:.1f}x)" for bs, n in pc["would_send"].items()))
    print()
    ok_scan = sc["ratio_cold_median"] >= 0.90
    ok_wire = cases[0]["ratio"] <= 1.1
    print("summary")
    print(f"  scan/read, cold (median of {args.reps})   {sc['ratio_cold_median']:.2f}  target >= 0.90  "
          f"{'met' if ok_scan else 'MISSED'}  ({med(sc['scan_cold']):.0f} vs {med(sc['read_cold']):.0f} MB/s; "
          f"vs read with drop-behind {sc['ratio_drop_median']:.2f}, {med(sc['read_drop_cold']):.0f} MB/s)")
    hs = results["hashes"]
    print("  hashes, MB/s on 1 MiB blocks         " + ", ".join(
        f"{n} {h['mb_s']:.0f}" for n, h in hs.items() if "AUTO" not in n))
    print(f"  1% blocks: wire/changed              {cases[0]['ratio']:.3f}  target <= 1.1  "
          f"{'met' if ok_wire else 'MISSED'}  (pass {cases[0]['pass_s']:.2f} s, "
          f"replica identical {cases[0]['identical']})")
    print(f"  1% bytes in 4 KiB writes: wire/changed {pc['ratio']:.1f}  (16 KiB pieces travel; whole "
          f"1 MiB blocks would send {pc['would_send'][1 << 20] / pc['changed_bytes']:.1f}x)")
    for c in cases:
        if "rsync" in c:
            rs = c["rsync"]
            print(f"  rsync anchor, {c['case']:26s} {rs['seconds']:.2f} s, sent {rs['sent'] / 1e6:.1f} MB "
                  f"(osam pass {c['pass_s']:.2f} s, {c['wire_bytes'] / 1e6:.1f} MB)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"block-results-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    identical = fs["identical"] and all(c["identical"] for c in cases)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
