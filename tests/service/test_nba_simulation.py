"""Next best action against the same three offers run side by side, in a seeded market through the
real HTTP API (tests/service/nba_simulation.py): it must earn clearly more per customer."""

from __future__ import annotations

from pathlib import Path

from tests.service import nba_simulation as sim


def test_next_best_action_beats_offers_run_side_by_side(tmp_path: Path) -> None:
    side = sim.run("side_by_side", sim.sqlite_url(tmp_path, "side"), seed=3, days=3, per_day=100)
    nba = sim.run("next_best_action", sim.sqlite_url(tmp_path, "nba"), seed=3, days=3, per_day=100)
    assert side.customers == nba.customers == 300
    # Compared on each contact's expected value (its conversion probability x margin), so chance
    # conversions cannot decide the test; random offers earn about 6.1 a customer, the oracle 14.
    assert abs(side.expected_per_customer - sim.random_value_per_customer()) < 1.0
    # Measured 7.9-8.0 against 5.7 over repeated runs (the first day runs side by side in both).
    assert nba.expected_per_customer > 1.2 * side.expected_per_customer, (nba, side)
    # It learned who wants what: the least valuable offer on average is not the one sent most.
    assert nba.by_offer["insurance"] > nba.by_offer["cards"]
