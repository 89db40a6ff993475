"""The metrics a report knows: the vocabulary the statistics and the experiment spec share.

The spec (experiments/) names these metrics in promotion rules and guardrails; the
statistics compute them. They live here, with the statistics, so the statistics never
depend on the experiment model.
"""

from __future__ import annotations

RATE_METRICS = ("open_rate", "click_rate", "click_to_open_rate", "conversion_rate", "unsubscribe_rate")
VALUE_METRICS = ("revenue_per_decision", "revenue_per_converter", "ltv_adjusted_value")
METRICS = RATE_METRICS + VALUE_METRICS
