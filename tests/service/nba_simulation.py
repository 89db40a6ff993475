"""A seeded market for next best action: three offer families of different margins, three customer
segments that respond differently, through the real HTTP API, decisions, events and refits.

Two ways to run the same offers on the same customers, each on its own fresh database:

- `side_by_side`: every customer is sent one of the three offers picked at random (the three
  experiments run side by side, each channel picking one), and that offer's bandit picks the
  variant;
- `next_best_action`: `POST /v1/next-best-action` picks the offer (and its bandit the variant).

Each day brings `per_day` new customers of the three segments; conversions (worth the offer's
margin) are reported a few hours later, the clock moves a day and the bandits refit. The total
value is what both ways earned. Used by tests/service/test_nba_simulation.py (small) and
bench/nba_bench.py (larger, printed in the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import clock, create_app
from service.store import db as db_module
from service.http.auth import create_key

MARGINS = {"cards": 30.0, "loans": 100.0, "insurance": 60.0}
SEGMENTS = ("young", "family", "retired")
RATES = {  # conversion probability of each segment for each offer
    "young": {"cards": 0.30, "loans": 0.02, "insurance": 0.05},
    "family": {"cards": 0.05, "loans": 0.15, "insurance": 0.05},
    "retired": {"cards": 0.05, "loans": 0.02, "insurance": 0.30},
}


def oracle_value_per_customer() -> float:
    return float(np.mean([max(RATES[s][o] * MARGINS[o] for o in MARGINS) for s in SEGMENTS]))


def random_value_per_customer() -> float:
    return float(np.mean([np.mean([RATES[s][o] * MARGINS[o] for o in MARGINS]) for s in SEGMENTS]))


def offer_spec(key: str) -> dict[str, Any]:
    return {"key": key, "name": f"{key} offer",
            "arms": [{"key": "standard", "is_control": True, "value": MARGINS[key]},
                     {"key": "premium", "value": MARGINS[key]}],
            "allocation": {"type": "bandit", "policy": {"name": "lin_ucb", "alpha": 0.25},
                           "features": [{"name": "segment", "type": "categorical", "source": "profile"}],
                           "refit_interval_seconds": 3600},
            "reward": {"event": "conversion"}}


@dataclass
class Result:
    strategy: str
    customers: int
    conversions: int
    value: float
    expected_value: float  # the sum of each contact's conversion probability x margin: value without outcome noise
    by_offer: dict[str, int]

    @property
    def per_customer(self) -> float:
        return self.value / self.customers

    @property
    def expected_per_customer(self) -> float:
        return self.expected_value / self.customers


def run(strategy: str, database_url: str, *, seed: int, days: int, per_day: int, warm_up_days: int = 1) -> Result:
    """One strategy on one fresh database; returns what it earned. For the first `warm_up_days` both
    strategies run the offers side by side (next best action is switched on for offers that have
    run for a while, so each has seen every segment)."""
    from service.jobs.learning import refit_all

    db_module.upgrade(database_url)
    app = create_app({"DATABASE_URL": database_url, "TESTING": True, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0,
                      "NEXTBEST_ACCESS_LOG": "off", "NEXTBEST_RATE_LIMIT_PER_SECOND": 0})
    client = app.test_client()
    with db_module.get_db(app).session() as session:
        tokens = {scope: create_key(session, f"sim-{scope}", scope)[1] for scope in ("channel", "analyst")}
    headers = {scope: {"Authorization": f"Bearer {token}"} for scope, token in tokens.items()}
    for key in MARGINS:
        assert client.post("/v1/experiments", json=offer_spec(key), headers=headers["analyst"]).status_code == 201
        assert client.post(f"/v1/experiments/{key}/start", headers=headers["analyst"]).status_code == 200
    rng = np.random.default_rng(seed)
    value, expected, conversions, by_offer, customers = 0.0, 0.0, 0, {k: 0 for k in MARGINS}, 0
    clock.reset()
    try:
        for day in range(days):
            segments = rng.choice(SEGMENTS, size=per_day)
            ids = [f"d{day}-c{i}" for i in range(per_day)]
            lines = "subject_id,attributes.segment\n" + "".join(f"{s},{g}\n" for s, g in zip(ids, segments, strict=True))
            imported = client.post("/v1/subjects/import", data=lines, content_type="text/csv",
                                   headers=headers["channel"])
            assert imported.status_code == 200, imported.get_json()
            events = []
            for subject, segment in zip(ids, segments, strict=True):
                if strategy == "next_best_action" and day >= warm_up_days:
                    answer = client.post("/v1/next-best-action", headers=headers["channel"],
                                         json={"subject_id": subject, "channels": ["email"],
                                               "exploration": 0.2}).get_json()
                else:
                    family = str(rng.choice(list(MARGINS)))
                    answer = client.post("/v1/assign", headers=headers["channel"],
                                         json={"experiment": family, "subject_id": subject,
                                               "channel": "email"}).get_json()
                if answer.get("no_offer") or not answer.get("assignment_id"):
                    continue
                customers += 1
                family = answer["experiment"]
                by_offer[family] += 1
                expected += RATES[str(segment)][family] * MARGINS[family]
                if rng.random() < RATES[str(segment)][family]:
                    conversions += 1
                    value += MARGINS[family]
                    events.append({"event_id": f"conv-{answer['assignment_id']}", "type": "conversion",
                                   "assignment_id": answer["assignment_id"], "value": MARGINS[family],
                                   "occurred_at": clock.iso_utc(clock.utcnow())})
            if events:
                sent = client.post("/v1/events", json={"events": events}, headers=headers["channel"])
                assert sent.status_code == 200 and sent.get_json()["rejected"] == 0, sent.get_json()
            clock.advance(86400 + 3600)  # a day later every decision of the wave has matured
            with app.app_context(), db_module.get_db(app).session() as session:
                refit_all(session, holder="simulation")
    finally:
        clock.reset()
        db_module.get_db(app).dispose()
    return Result(strategy, customers, conversions, value, expected, by_offer)


def sqlite_url(folder: Path, name: str) -> str:
    return f"sqlite:///{folder / f'{name}.sqlite3'}"
