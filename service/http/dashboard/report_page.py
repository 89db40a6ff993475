"""One experiment's report made ready to show: the dashboard's experiment page and the exported HTML
report both read it, so they show the same tables, charts and words."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from service.http.dashboard import charts, present

STYLESHEET = Path(__file__).parent / "static" / "dashboard.css"


@dataclass(frozen=True, slots=True)
class ReportPage:
    """What the report sections of a page show, already in words; `report` is the API's JSON-shaped report."""

    report: dict[str, Any] | None
    labels: dict[str, str]
    level: int = 95
    decision_table: present.MetricTable | None = None
    other_tables: list[present.MetricTable] = field(default_factory=list)
    empty_metrics: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    leader: present.Leader | None = None
    warnings: list[str] = field(default_factory=list)  # every warning but the SRM one, which is shown on its own


def labels_of(arms: Any) -> dict[str, str]:
    """Arm labels from arm names; an arm without a name is shown by its key."""
    return {arm.key: arm.name or arm.key for arm in arms}


def prepare(report: dict[str, Any] | None, labels: dict[str, str]) -> ReportPage:
    """Split the report into the decision metric, the other metrics with and without data, charts and warnings."""
    if report is None:
        return ReportPage(None, labels)
    decision_table, other_tables, empty_metrics = None, [], []
    for block in report["metrics"]:
        table = present.metric_table(block, labels)
        if block["metric"] == report["decision_metric"]:
            decision_table = table
        elif present.has_data(block):
            other_tables.append(table)
        else:
            empty_metrics.append(table.label)
    metric_name = present.metric_label(report["decision_metric"])
    chart_list = [
        {"name": c.name, "title": c.title, "note": c.note, "svg": Markup(c.svg)}  # noqa: S704 - our own SVG
        for c in charts.report_charts(report, labels, metric_name)
    ]
    return ReportPage(
        report=report,
        labels=labels,
        level=round(100 * report["confidence"]),
        decision_table=decision_table,
        other_tables=other_tables,
        empty_metrics=empty_metrics,
        charts=chart_list,
        leader=present.leader(report),
        warnings=[w for w in report["warnings"] if w != report["srm"]["message"]],
    )


def stylesheet() -> Markup:
    """The dashboard's stylesheet, for a page that must carry its styles inline (the exported report)."""
    css = STYLESHEET.read_text(encoding="utf-8")
    assert "</" not in css and "url(" not in css, "the inline stylesheet must not end its element or fetch anything"
    return Markup(css)  # noqa: S704 - our own file
