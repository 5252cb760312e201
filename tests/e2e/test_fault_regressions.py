"""Defects the fault campaigns (tests/faults) found, each replayed on its own."""
from __future__ import annotations

import pytest

from tests.e2e.site import wait_for
from tests.faults.harness import FaultSite, tree_matches
from tests.faults.proxy import UP
from tests.util.trees import diff_trees, make_rich_tree, mutate_rich_tree

pytestmark = [pytest.mark.need_root, pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_changes_in_flight_when_the_link_drops_are_sent_again(disk_tmp_path):
    """Changes the sentinel had sent but the receiver had not acknowledged when the link was
    cut (here: right as a continuous pass carried them) used to be lost: they had left the
    change set and the index never recorded them. The next sync now walks and compares."""
    site = FaultSite(disk_tmp_path / "site", seed=7)
    try:
        src = disk_tmp_path / "guest"
        make_rich_tree(src)
        site.start_all("inflight", src)
        site.api("POST", "/v1/migrations", {"guest": "inflight", "switchover": "manual"})
        site.wait_phase("inflight", "continuous_sync")
        wait_for(lambda: site.migration("inflight")["last_sync_at"], 60, "the first continuous pass")
        site.sg.cut_in(4096, UP)        # cut the link while the changes are on their way
        mutate_rich_tree(src)
        wait_for(lambda: site.sg.cuts, 30, "the cut")
        wait_for(lambda: tree_matches(src, site.replica("inflight")), 60, "the replica to catch up")
        site.api("POST", "/v1/migrations/inflight/switchover", {})
        site.wait_phase("inflight", "completed", 120)
        assert diff_trees(src, site.replica("inflight")) == []
    finally:
        site.stop_all()
