"""Run the fault campaigns and print their table (last line: `mismatches: N`).

    python -m tests.faults.run [--quick] [--seed N] [--only NAME ...]

Exits 1 when anything mismatched or a campaign failed to run, 2 on an unknown name."""
from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from typing import List, Optional, Sequence

from tests.faults.report import CampaignResult, table


def run(quick: bool, seed: int, only: Optional[Sequence[str]] = None) -> List[CampaignResult]:
    from tests.faults.registry import CAMPAIGNS
    names = [n for n, _ in CAMPAIGNS]
    unknown = [n for n in only or () if n not in names]
    if unknown:
        raise SystemExit(f"unknown campaign(s) {unknown}; known: {names}")
    results = []
    for name, fn in CAMPAIGNS:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        print(f"== {name} (quick={quick}, seed={seed})", flush=True)
        try:
            result = fn(quick, seed)
        except Exception as e:
            traceback.print_exc()
            result = CampaignResult(name, seed, mismatches=1, notes=[f"ERROR {type(e).__name__}: {e}"])
            result.seconds = time.monotonic() - t0
        results.append(result)
        print(table([result]), flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few faults per campaign (the test suite's variant)")
    p.add_argument("--seed", type=int, default=None, help="replay a run (default: a new random seed)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these campaigns")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"fault campaigns: seed={seed} (replay with --seed {seed})", flush=True)
    results = run(args.quick, seed, args.only)
    print()
    print(table(results))
    bad = sum(r.mismatches for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
