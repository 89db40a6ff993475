"""Small made-up histories for the dashboard tests: a broken split over several days, and a bandit log."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def three_arm_spec(key: str, name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "key": key, "name": name,
        "arms": [{"key": "control", "name": "No e-mail", "is_control": True},
                 {"key": "mens", "name": "Mens e-mail"}, {"key": "womens", "name": "Womens e-mail"}],
        "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}},
        "reward": {"event": "conversion"},
        "promotion": {"metric": "conversion_rate"},
    }
    spec.update(overrides)
    return spec


def skewed_csv(days: int = 6, counts: dict[str, int] | None = None) -> bytes:
    """Decisions over `days` days where the control got twice its share of an equal split: a sample ratio mismatch."""
    counts = counts or {"control": 800, "mens": 400, "womens": 400}
    convert_every = {"control": 50, "mens": 22, "womens": 34}
    lines = ["subject_id,arm,decided_at,click,conversion,revenue"]
    for arm, n in counts.items():
        for i in range(n):
            decided = START + timedelta(days=i % days, minutes=i)
            converted = i % convert_every[arm] == 0
            clicked = converted or i % 6 == 0
            revenue = f"{20 + i % 30}.50" if converted else "0"
            lines.append(f"{arm}-{i},{arm},{decided.isoformat()},{int(clicked)},{int(converted)},{revenue}")
    return ("\n".join(lines) + "\n").encode()


def balanced_csv(days: int = 3) -> bytes:
    return skewed_csv(days, {"control": 300, "mens": 300, "womens": 300})


def bandit_spec(key: str = "bandit-banner") -> dict[str, Any]:
    return {
        "key": key, "name": "Homepage banner bandit",
        "arms": [{"key": "control", "is_control": True}, {"key": "sale"}, {"key": "new-in"}],
        "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}},
        "reward": {"event": "click"},
        "promotion": {"metric": "click_rate"},
    }


def bandit_ndjson(days: int = 6, per_day: int = 240) -> bytes:
    """A bandit log: traffic moves from an even split towards 'sale' day by day, with the logged propensities."""
    rates = {"control": 0.05, "sale": 0.12, "new-in": 0.07}
    lines = []
    for day in range(days):
        sale = 1 / 3 + (0.8 - 1 / 3) * day / (days - 1)
        shares = {"control": (1 - sale) / 2, "sale": sale, "new-in": (1 - sale) / 2}
        for i in range(per_day):
            position = (i + 0.5) / per_day
            arm = "control" if position < shares["control"] else (
                "sale" if position < shares["control"] + shares["sale"] else "new-in")
            clicked = (i * 7919 + day * 104729) % 1000 < rates[arm] * 1000
            lines.append(json.dumps({
                "subject_id": f"s{day}-{i}", "arm": arm, "propensity": round(shares[arm], 6),
                "decided_at": (START + timedelta(days=day, minutes=i)).isoformat(), "click": int(clicked),
            }))
    return ("\n".join(lines) + "\n").encode()


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)
