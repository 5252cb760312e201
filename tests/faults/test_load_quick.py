"""The quick variant of the load campaign, in the normal test run: 8 guests at once through one
gateway and one receiver reach `completed` with replicas identical to their sources, and the
bandwidth limits hold within 10%: one guest's (osam-sentinel --bandwidth-limit) and a
gateway's shared by several guests (osam-gateway --bandwidth-limit), each measured on the
wire over several seconds. `python -m tests.faults.load --full` runs 50 guests."""
from __future__ import annotations

import random

import pytest

from tests.faults import load
from tests.faults.report import table

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_many_guests_at_once_and_the_bandwidth_limits(disk_tmp_path):
    seed = random.SystemRandom().randrange(1 << 31)
    print(f"load campaign: seed={seed} (replay: python -m tests.faults.load --seed {seed})")
    results, measures = load.run_all(True, seed, disk_tmp_path)
    report = table(results)
    print(report)
    assert report.splitlines()[-1] == "mismatches: 0", report
    for r in results:
        assert r.migrations > 0 and r.completed == r.migrations, report
    assert results[0].migrations == load.GUESTS[True]
    assert len(measures) == 2
    for m in measures:
        assert m.seconds >= 2.5, f"{m.what}: measured over {m.seconds:.1f} s only\n{report}"
        assert m.ok, f"{m.note()}\n{report}"
