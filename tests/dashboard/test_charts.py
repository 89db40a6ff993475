"""Chart rendering on its own: report-shaped data in, inline SVG that a strict CSP allows out."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from service.http.dashboard import charts

SVG = "{http://www.w3.org/2000/svg}"


def _report(**overrides: Any) -> dict[str, Any]:
    """The smallest report dict the charts read (the shape of `report_to_dict`)."""
    arms = [
        {"arm": "control", "is_control": True, "decisions": 1000, "ltv_components": None},
        {"arm": "offer", "is_control": False, "decisions": 1000, "ltv_components": None},
    ]
    daily = []
    for day, (c, o) in enumerate([(300, 300), (700, 700), (1000, 1000)], start=1):
        for arm, n, rate in (("control", c, 0.02), ("offer", o, 0.03)):
            daily.append({"day": f"2026-03-0{day}", "arm": arm, "decisions": n, "diff_vs_control": None,
                          "metrics": {"conversion_rate": {"value": rate, "ci_low": rate - 0.005,
                                                          "ci_high": rate + 0.005, "error": None}}})
    metrics = [{"metric": "conversion_rate", "kind": "rate", "higher_is_better": True, "arms": [
        {"arm": "control", "is_control": True, "n": 1000, "lift": None, "lift_ci_low": None, "lift_ci_high": None},
        {"arm": "offer", "is_control": False, "n": 1000, "lift": 0.5, "lift_ci_low": 0.1, "lift_ci_high": 0.9},
    ]}]
    report = {"decision_metric": "conversion_rate", "confidence": 0.95, "allocation_type": "fixed",
              "arms": arms, "daily": daily, "metrics": metrics}
    report.update(overrides)
    return report


def test_fixed_split_gets_the_cumulative_and_lift_charts() -> None:
    drawn = charts.report_charts(_report(), {"offer": "Spring offer"}, "Conversion rate")
    assert [c.name for c in drawn] == ["cumulative", "lift"]
    cumulative = ET.fromstring(drawn[0].svg)
    assert cumulative.tag == f"{SVG}svg" and cumulative.get("role") == "img"
    assert cumulative.get("aria-label") == "Cumulative conversion rate per arm (95% interval)"
    assert cumulative.find(f"{SVG}title").text == cumulative.get("aria-label")
    assert cumulative.get("width") is None and cumulative.get("viewBox")  # sized by CSS, scales with the page
    # The interval band: a filled polygon with partial opacity, coloured like its arm's line.
    bands = [e for e in cumulative.iter() if e.get("fill-opacity") == "0.15"]
    assert {b.get("fill").lower() for b in bands} == {charts.CONTROL_COLOR.lower(), charts.PALETTE[0].lower()}


def test_svg_is_safe_to_inline_under_the_csp() -> None:
    svg = charts.report_charts(_report(), {}, "Conversion rate")[0].svg
    assert "style=" not in svg and "<style" not in svg and "<script" not in svg and "metadata" not in svg
    assert not svg.startswith("<?xml") and "DOCTYPE" not in svg
    ids = re.findall(r' id="([^"]+)"', svg)
    assert ids and all(i.startswith("cumulative-") for i in ids)
    for ref in re.findall(r'url\(#([^)]+)\)', svg) + re.findall(r'xlink:href="#([^"]+)"', svg):
        assert ref in ids


def test_charts_are_deterministic() -> None:
    first = charts.report_charts(_report(), {}, "Conversion rate")
    second = charts.report_charts(_report(), {}, "Conversion rate")
    assert [c.svg for c in first] == [c.svg for c in second]


def test_bandit_gets_the_allocation_chart_and_per_day_counts() -> None:
    report = _report(allocation_type="bandit")
    assert [c.name for c in charts.report_charts(report, {}, "Conversion rate")] == ["cumulative", "lift",
                                                                                     "allocation"]
    per_day = charts.daily_decisions(report["daily"])
    assert [per_day[d]["offer"] for d in sorted(per_day)] == [300, 400, 300]


def test_ltv_chart_only_when_the_report_has_ltv_components() -> None:
    assert charts.ltv_chart(_report(), {}, {}) is None
    arms = [
        {"arm": "control", "is_control": True, "decisions": 1000,
         "ltv_components": {"revenue": 0.6, "unsubscribe_loss": -0.1}},
        {"arm": "offer", "is_control": False, "decisions": 1000,
         "ltv_components": {"revenue": 1.2, "unsubscribe_loss": -0.5}},
    ]
    report = _report(arms=arms)
    chart = charts.ltv_chart(report, {}, charts.colors_for(arms))
    assert chart is not None and chart.name == "ltv" and chart.svg.startswith("<svg")
    assert [c.name for c in charts.report_charts(report, {}, "Conversion rate")][-1] == "ltv"


def test_nothing_to_draw_without_data() -> None:
    empty = _report(daily=[], metrics=[{**_report()["metrics"][0], "arms": [
        {"arm": "control", "is_control": True, "n": 0, "lift": None, "lift_ci_low": None, "lift_ci_high": None}]}])
    assert charts.report_charts(empty, {}, "Conversion rate") == []


def test_many_arms_are_capped_with_a_note() -> None:
    arms = [{"arm": f"a{i}", "is_control": i == 0, "decisions": 100 + i, "ltv_components": None} for i in range(12)]
    daily = [{"day": "2026-03-01", "arm": a["arm"], "decisions": a["decisions"], "diff_vs_control": None,
              "metrics": {"conversion_rate": {"value": 0.1, "ci_low": 0.05, "ci_high": 0.15, "error": None}}}
             for a in arms]
    chart = charts.cumulative_chart(_report(arms=arms, daily=daily), {}, charts.colors_for(arms), "Conversion rate")
    assert chart is not None and chart.note == "Showing 8 of 12 arms (the control and the arms with most decisions)."
