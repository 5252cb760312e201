"""The hostile-input campaign for `make faults`: the decoders' fuzz (a million inputs, or a
quick 20,000) and every hostile data-channel script against the Applier in file and block
mode. faults = inputs and attacks made; mismatches = defects seen (an exception other than
ProtocolError, a decoder over its memory bound, an attack with another outcome than a clean
refusal or a harmless one, anything outside a replica touched). The attacks over real TLS
and the search for secrets run as tests (tests/faults/hostile/test_network.py)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from tests.faults.report import CampaignResult
from tests.faults.hostile import attacks, fuzz

FULL_INPUTS = 1_000_000
QUICK_INPUTS = 20_000


def run(quick: bool, seed: int) -> CampaignResult:
    started = time.monotonic()
    result = CampaignResult("hostile", seed)
    stats = fuzz.campaign(QUICK_INPUTS if quick else FULL_INPUTS, seed, 200 if quick else 5000)
    result.faults += stats.inputs
    result.mismatches += stats.unexpected + stats.peak_over_limit
    result.notes.append("fuzz: " + stats.summary())
    result.notes.extend(f"fuzz defect: {d}" for d in stats.defects)

    bad = []
    counts = {"refused": 0, "resend": 0, "harmless": 0}

    def on_result(mode, name, expected, got, touched):
        outcome = got.split(":", 1)[0]
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != expected or touched:
            bad.append(f"{mode} {name}: expected {expected}, got {got[:200]}; touched outside: {touched}")

    base = Path(tempfile.mkdtemp(prefix="osam-hostile-"))
    try:
        attacks.run_all(base, on_result)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    made = sum(counts.values())
    result.faults += made
    result.mismatches += len(bad)
    result.notes.append(f"attacks: {made} scripts ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
                        f"{len(bad)} defects")
    result.notes.extend(bad)
    result.seconds = time.monotonic() - started
    return result


if __name__ == "__main__":
    import argparse
    from tests.faults.report import table
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(table([run(a.quick, a.seed)]))
