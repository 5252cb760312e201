"""The campaign entry `make faults` imports, in its quick form."""
from tests.faults.hostile.campaign import run


def test_quick_campaign_finds_no_defect():
    result = run(quick=True, seed=3)
    assert result.mismatches == 0, result.notes
    assert result.faults > 20_000
