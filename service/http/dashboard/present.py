"""Numbers and history in the words an analyst reads: percentages, intervals, leaders, audit lines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

METRIC_LABELS = {
    "open_rate": "Open rate",
    "click_rate": "Click rate",
    "click_to_open_rate": "Click-to-open rate",
    "conversion_rate": "Conversion rate",
    "unsubscribe_rate": "Unsubscribe rate",
    "revenue_per_decision": "Revenue per decision",
    "revenue_per_converter": "Revenue per converter",
    "ltv_adjusted_value": "LTV-adjusted value",
}
ERROR_LABELS = {
    "NO_EVENTS": "no events yet",
    "NO_DATA": "no data",
    "NOT_COMPUTED": "not computed",
    "ZERO_VARIANCE": "no variation",
    "NOT_ENOUGH_ARMS": "not enough arms",
}
EMPTY = "–"


def metric_label(metric: str) -> str:
    """Say a metric's name; custom `<event>_rate` metrics read as '<event> rate'."""
    return METRIC_LABELS.get(metric) or metric.replace("_", " ").capitalize()


def error_label(code: str | None) -> str:
    return ERROR_LABELS.get(code or "", (code or "").replace("_", " ").lower())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def value(v: float | None, kind: str) -> str:
    """A rate as a percentage (1.25%), a mean as a number with two decimals (1.42)."""
    if not _finite(v):
        return EMPTY
    assert v is not None
    if kind == "rate":
        return f"{100 * v:.3f}%" if 0 < abs(v) < 0.001 else f"{100 * v:.2f}%"
    return f"{v:,.2f}"


def interval(low: float | None, high: float | None, kind: str) -> str:
    if not (_finite(low) and _finite(high)):
        return EMPTY
    return f"{value(low, kind)} – {value(high, kind)}"


def lift(v: float | None) -> str:
    return f"{100 * v:+.1f}%" if _finite(v) else EMPTY  # type: ignore[operator]


def lift_interval(low: float | None, high: float | None) -> str:
    if not (_finite(low) and _finite(high)):
        return EMPTY
    return f"{lift(low)} – {lift(high)}"


def probability(p: float | None) -> str:
    """A chance as a percentage that never claims certainty: >99.9% rather than 100.0%."""
    if not _finite(p):
        return EMPTY
    assert p is not None
    if p > 0.999:
        return ">99.9%"
    if p < 0.001:
        return "<0.1%"
    return f"{100 * p:.1f}%"


def p_value(p: float | None) -> str:
    if not _finite(p):
        return EMPTY
    assert p is not None
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def p_is(p: float | None) -> str:
    """'p = 0.0152' or 'p < 0.0001'."""
    text = p_value(p)
    return text if text == EMPTY else f"p {text}" if text.startswith("<") else f"p = {text}"


def share(v: float | None) -> str:
    return f"{100 * v:.1f}%" if _finite(v) else EMPTY  # type: ignore[operator]


def count(n: int | None) -> str:
    return f"{n:,}" if isinstance(n, int) else EMPTY


def when(moment: datetime | str | None) -> str:
    """A UTC timestamp to the minute, the same for every viewer."""
    if moment is None:
        return EMPTY
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def metric_block(report: dict[str, Any], metric: str) -> dict[str, Any] | None:
    return next((m for m in report["metrics"] if m["metric"] == metric), None)


def has_data(block: dict[str, Any]) -> bool:
    """False when every arm's value is missing or zero (e.g. open rate when opens are not tracked)."""
    return any(_finite(r["value"]) and r["value"] != 0 for r in block["arms"])


@dataclass(frozen=True, slots=True)
class Leader:
    """The arm currently ahead on the decision metric."""

    arm: str
    value: str
    chance_to_be_best: str
    significant: bool  # ahead of the control after the Holm adjustment
    is_control: bool


def leader(report: dict[str, Any]) -> Leader | None:
    """The best arm on the decision metric by its point estimate, or None while there is nothing to compare."""
    block = metric_block(report, report["decision_metric"])
    if block is None or not has_data(block):
        return None
    rows = [r for r in block["arms"] if _finite(r["value"])]
    if len(rows) < 2:
        return None
    sign = 1 if block["higher_is_better"] else -1
    best = max(rows, key=lambda r: sign * r["value"])
    return Leader(
        arm=best["arm"],
        value=value(best["value"], block["kind"]),
        chance_to_be_best=probability(best.get("chance_to_be_best")),
        significant=bool(best.get("significant")) and not best["is_control"],
        is_control=best["is_control"],
    )


def actor_label(actor: str) -> str:
    """Who acted, in words: a job's holder id (`jobs:host:pid:thread`) becomes "the jobs on host"."""
    kind, sep, rest = actor.partition(":")
    if sep and rest.count(":") >= 2 and kind in ("jobs", "cli", "promotion", "refit", "worker"):
        host = rest.split(":", 1)[0]
        return {"jobs": "service jobs", "cli": "command line"}.get(kind, f"{kind} job") + f" on {host}"
    return actor


def history_rows(entries: Sequence[Any]) -> list[dict[str, Any]]:
    """Audit entries newest first, in words; runs of refits fold into one line, so they never flood the history."""
    rows: list[dict[str, Any]] = []
    for entry in entries:
        if entry.action == "refit" and rows and rows[-1]["action"] == "refit":
            folded = rows[-1]
            folded["count"] += 1
            folded["summary"] = f"{folded['count']} refits; the newest: {folded['first_summary']}"
            continue
        summary = audit_summary(entry.action, entry.details)
        rows.append({"when": when(entry.created_at), "actor": actor_label(entry.actor),
                     "action": entry.action, "summary": summary, "first_summary": summary, "count": 1})
    return rows


def status_label(experiment: dict[str, Any]) -> str:
    """The state a person needs: a running experiment with a promoted winner says so."""
    if experiment.get("status") == "running" and experiment.get("winner"):
        return f"promoted: {experiment['winner']}"
    return str(experiment.get("status", ""))


def audit_summary(action: str, details: dict[str, Any] | None) -> str:
    """One line that says what an audit entry changed."""
    d = details or {}
    if action in ("start", "pause", "conclude", "promote", "stop") and "status_after" in d:
        text = f"{d.get('status_before', '?')} → {d['status_after']}"
        if d.get("winner"):
            text += f", winner {d['winner']}"
        if d.get("reason"):
            text += f": {d['reason']}"
        return text
    if action == "create":
        return "created in draft"
    if action == "update":
        return "changed " + ", ".join(d.get("changed") or []) if d.get("changed") else "updated"
    if action == "refit_failed":
        return f"refit failed, the previous policy keeps serving: {d.get('error', 'unknown error')}"[:200]
    if action == "import":
        text = f"imported {count(d.get('imported'))} of {count(d.get('rows'))} rows"
        if d.get("rejected"):
            text += f", {count(d.get('rejected'))} rejected"
        return text
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in d.items() if isinstance(v, str | int | float | bool)]
    text = ", ".join(parts)
    return text if len(text) <= 200 else text[:199] + "…"


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One arm's line in a metric table, already in words."""

    arm: str
    label: str
    is_control: bool
    n: str
    successes: str
    value: str
    interval: str
    lift: str
    lift_interval: str
    chance_to_beat_control: str
    chance_to_be_best: str
    p_value_holm: str
    significant: bool
    note: str


@dataclass(frozen=True, slots=True)
class MetricTable:
    metric: str
    label: str
    kind: str
    higher_is_better: bool
    rows: list[MetricRow]


def metric_table(block: dict[str, Any], labels: dict[str, str]) -> MetricTable:
    """A report metric block as rows of formatted cells."""
    kind = block["kind"]
    rows = [
        MetricRow(
            arm=r["arm"],
            label=labels.get(r["arm"], r["arm"]),
            is_control=r["is_control"],
            n=count(r["n"]),
            successes=count(r["successes"]),
            value=value(r["value"], kind),
            interval=interval(r["ci_low"], r["ci_high"], kind),
            lift="control" if r["is_control"] else lift(r["lift"]),
            lift_interval="" if r["is_control"] else lift_interval(r["lift_ci_low"], r["lift_ci_high"]),
            chance_to_beat_control="" if r["is_control"] else probability(r["chance_to_beat_control"]),
            chance_to_be_best=probability(r["chance_to_be_best"]),
            p_value_holm="" if r["is_control"] else p_value(r["p_value_holm"]),
            significant=bool(r["significant"]) and not r["is_control"],
            note=error_label(r["error"]) if r["error"] else "",
        )
        for r in block["arms"]
    ]
    return MetricTable(block["metric"], metric_label(block["metric"]), kind, block["higher_is_better"], rows)
