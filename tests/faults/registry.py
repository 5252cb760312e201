"""The campaigns `python -m tests.faults.run` knows: (name, function(quick, seed) -> CampaignResult).
Other campaign modules add their entries here."""
from __future__ import annotations

from tests.faults import campaigns, clock_jumps, load
from tests.faults.hostile import campaign as hostile

CAMPAIGNS = [
    ("link_cuts", campaigns.link_cuts),
    ("sigkill", campaigns.kills),
    ("disk_full", campaigns.disk_full),
    ("retry_limit", campaigns.retry_limit),
    ("clock_jumps", clock_jumps.run),
    ("hostile", hostile.run),
    ("load", load.run),
]
