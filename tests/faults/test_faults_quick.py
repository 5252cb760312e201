"""The quick variant of the fault campaigns, in the normal test run: a few link cuts (file and
block mode), one SIGKILL of each daemon, a full receiver disk, a link down for longer than
max_retry_interval, and the receiver's clock jumping into a maintenance window; every replica
must equal its source. `make faults` runs the full ones."""
from __future__ import annotations

import random

import pytest

from tests.faults.report import table
from tests.faults.run import run

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.slow]

CAMPAIGNS = ["link_cuts", "sigkill", "disk_full", "retry_limit", "clock_jumps"]


@pytest.mark.timeout(900)
def test_quick_fault_campaigns_leave_no_mismatch():
    seed = random.SystemRandom().randrange(1 << 31)
    print(f"fault campaigns: seed={seed} (replay: python -m tests.faults.run --quick --seed {seed})")
    results = run(True, seed, CAMPAIGNS)
    report = table(results)
    print(report)
    assert report.splitlines()[-1] == "mismatches: 0", report
    assert [r.name for r in results] == CAMPAIGNS, report
    # Every migration finished as its campaign expects (a campaign may add migrations until
    # its faults have landed), and each campaign made faults.
    assert all(r.migrations >= 1 and r.completed == r.migrations for r in results), report
    assert all(r.faults > 0 for r in results), report
