"""JSON and CSV renderings of a report, and its JSON schema for the OpenAPI document."""

import csv
import dataclasses
import datetime
import io
import json

import numpy as np
import pytest
from pydantic import TypeAdapter

from reports import ArmSummary, DailyArmSummary, MeanStats, Report, ReportInput, build_report
from reports import report_to_csv, report_to_dict
from reports.cuped import CovariateStats
from reports.render import CSV_COLUMNS

GENERATED = datetime.datetime(2026, 11, 24, 10, 0, tzinfo=datetime.UTC)


def _arm(name: str, decisions: int, conversions: int, seed: int, control: bool = False) -> ArmSummary:
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 50.0, decisions)  # pre-period spend
    y = (rng.random(decisions) < conversions / decisions).astype(float)
    revenue = y * rng.gamma(3.0, 20.0, decisions)
    return ArmSummary(
        arm=name,
        is_control=control,
        expected_share=0.5,
        decisions=decisions,
        subjects=decisions,
        reached={"conversion": int(y.sum()), "open": decisions // 3, "click": decisions // 10},
        event_counts={"conversion": int(y.sum())},
        revenue=MeanStats(decisions, float(revenue.sum()), float((revenue**2).sum())),
        converter_revenue=MeanStats(int(y.sum()), float(revenue.sum()), float((revenue**2).sum())),
        covariate=CovariateStats(decisions, x.sum(), (x**2).sum(), y.sum(), (y**2).sum(), (x * y).sum()),
    )


@pytest.fixture(scope="module")
def report() -> Report:
    arms = [_arm("control", 3000, 150, 1, control=True), _arm("t", 3000, 190, 2)]
    daily = [
        DailyArmSummary(datetime.date(2026, 11, d), arm, 1500, {"conversion": c}, MeanStats(1500, 100.0 * c, 1e4 * c))
        for d, arm, c in ((1, "control", 70), (1, "t", 90), (2, "control", 80), (2, "t", 100))
    ]
    return build_report(
        ReportInput("render", "fixed", arms, daily=daily, generated_at=GENERATED, unattributed_events={"late": 2})
    )


def test_dict_is_json_with_stable_keys(report):
    data = json.loads(json.dumps(report_to_dict(report), allow_nan=False))
    assert list(data) == [f.name for f in dataclasses.fields(Report)]
    assert data["generated_at"] == "2026-11-24T10:00:00+00:00"
    assert data["daily"][0]["day"] == "2026-11-01"
    row = data["metrics"][0]["arms"][1]
    assert {"arm", "metric", "value", "ci_low", "diff", "lift", "p_value", "p_value_holm", "error"} <= set(row)
    assert data["unattributed_total"] == 2


def test_nan_and_infinity_become_null(report):
    metric = report.metrics[0]
    broken_row = dataclasses.replace(metric.arms[1], value=float("nan"), lift=float("inf"))
    broken = dataclasses.replace(report, metrics=[dataclasses.replace(metric, arms=[metric.arms[0], broken_row])])
    row = report_to_dict(broken)["metrics"][0]["arms"][1]
    assert row["value"] is None and row["lift"] is None
    json.dumps(report_to_dict(broken), allow_nan=False)


def test_csv_has_one_row_per_arm_and_metric(report):
    rows = list(csv.DictReader(io.StringIO(report_to_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == sum(len(m.arms) for m in report.metrics)
    by_key = {(r["arm"], r["metric"]): r for r in rows}
    for metric in report.metrics:
        for result in metric.arms:
            row = by_key[(result.arm, metric.metric)]
            for column in ("value", "ci_low", "ci_high", "diff", "lift_ci_high", "p_value", "chance_to_be_best"):
                expected = getattr(result, column)
                assert row[column] == ("" if expected is None else repr(expected))
    decision = by_key[("t", "conversion_rate")]
    assert float(decision["sequential_ci_low"]) == report.sequential.arms[0].ci_low
    assert float(decision["cuped_diff"]) == report.cuped.arms[0].diff
    assert by_key[("t", "open_rate")]["sequential_ci_low"] == ""
    assert by_key[("control", "conversion_rate")]["diff"] == ""


def test_pydantic_describes_and_reads_back_the_report(report):
    adapter = TypeAdapter(Report)
    schema = adapter.json_schema()
    assert schema["type"] == "object"
    assert {"ArmMetricResult", "SrmResult", "DailyPoint", "SequentialSection", "CupedSection"} <= set(schema["$defs"])
    assert schema["$defs"]["ArmMetricResult"]["properties"]["p_value"]["anyOf"] == [
        {"type": "number"},
        {"type": "null"},
    ]
    # the JSON rendering is exactly what the schema describes
    assert adapter.validate_json(json.dumps(report_to_dict(report))) == report
