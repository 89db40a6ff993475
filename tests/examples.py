"""Wire-format examples from DESIGN.md, as plain data (no Flask), shared by core and API tests."""

from __future__ import annotations

from typing import Any


def spring_email(**overrides: Any) -> dict[str, Any]:
    """The create-experiment example of DESIGN.md, as written."""
    spec: dict[str, Any] = {
        "key": "spring-email", "name": "Spring e-mail offer",
        "arms": [{"key": "control", "is_control": True, "payload": {"template": "none"}},
                 {"key": "mens", "payload": {"template": "mens-v1"}},
                 {"key": "womens", "payload": {"template": "womens-v1"}}],
        "allocation": {"type": "fixed", "weights": {"control": 1, "mens": 1, "womens": 1}},
        "reward": {"event": "conversion"},
        "attribution_window_seconds": 1209600,
        "guardrails": [{"metric": "unsubscribe_rate", "max_relative_increase": 0.10}],
        "promotion": {"metric": "conversion_rate", "confidence": 0.95,
                      "min_decisions_per_arm": 1000, "min_runtime_seconds": 604800, "action": "promote"},
        "contact_policy": {"max_per_subject": {"count": 3, "per_seconds": 604800},
                           "cooldown_after_conversion_seconds": 259200,
                           "quiet_hours": {"start": "21:00", "end": "08:00"}},
    }
    spec.update(overrides)
    return spec
