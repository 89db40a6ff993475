"""Next best action against three offers run side by side (tests/service/nba_simulation.py, larger).

Three offer families (cards 30, loans 100, insurance 60 per conversion), three segments
that each want a different one, LinUCB per family on the segment from the profile, all
through the real HTTP API on SQLite with a simulated clock. The first day runs side
by side in both arms; then either every customer gets a random offer (side by side) or
`POST /v1/next-best-action` picks it. Value per customer is measured (conversions x
margin) and expected (each contact's conversion probability x margin, free of outcome noise).

Run: .venv/bin/python bench/nba_bench.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.service import nba_simulation as sim  # noqa: E402

DAYS, PER_DAY, SEEDS = 5, 200, (1, 2)


def main() -> None:
    rows = []
    for seed in SEEDS:
        for strategy in ("side_by_side", "next_best_action"):
            folder = Path(tempfile.mkdtemp(prefix="nextbest-nba-"))
            started = time.perf_counter()
            result = sim.run(strategy, sim.sqlite_url(folder, strategy), seed=seed, days=DAYS, per_day=PER_DAY)
            rows.append((seed, result, time.perf_counter() - started))
    print(f"\nNext best action vs. side by side ({DAYS} days x {PER_DAY} customers, seeds {SEEDS}; "
          f"oracle {sim.oracle_value_per_customer():.2f}, random offer {sim.random_value_per_customer():.2f} "
          "per customer)\n")
    print("| seed | strategy | customers | conversions | value | value per customer | expected per customer | "
          "cards / loans / insurance | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed, r, seconds in rows:
        mix = " / ".join(str(r.by_offer[k]) for k in ("cards", "loans", "insurance"))
        print(f"| {seed} | {r.strategy.replace('_', ' ')} | {r.customers} | {r.conversions} | {r.value:,.0f} | "
              f"{r.per_customer:.2f} | {r.expected_per_customer:.2f} | {mix} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
