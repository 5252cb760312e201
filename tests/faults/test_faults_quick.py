"""The quick variant of the fault campaigns, in the normal test run: a few link cuts (file and
block mode), one SIGKILL of each daemon, a full receiver disk, and a link down for longer than
max_retry_interval; every replica must equal its source. `make faults` runs the full ones."""
from __future__ import annotations

import random

import pytest

from tests.faults.report import table
from tests.faults.run import run

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.slow]

# Completions each campaign must reach in its quick variant (migrations finished as expected).
EXPECTED = {"link_cuts": 2, "sigkill": 1, "disk_full": 1, "retry_limit": 1}


@pytest.mark.timeout(900)
def test_quick_fault_campaigns_leave_no_mismatch():
    seed = random.SystemRandom().randrange(1 << 31)
    print(f"fault campaigns: seed={seed} (replay: python -m tests.faults.run --quick --seed {seed})")
    results = run(True, seed, list(EXPECTED))
    report = table(results)
    print(report)
    assert report.splitlines()[-1] == "mismatches: 0", report
    assert {r.name: r.completed for r in results} == EXPECTED, report
    assert all(r.faults > 0 for r in results), report
