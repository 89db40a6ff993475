"""Render a ``Report`` as JSON-ready data or as CSV."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import math
from typing import Any

from reports.abtest import Report

CSV_COLUMNS = (
    "arm",
    "metric",
    "is_control",
    "n",
    "successes",
    "value",
    "ci_low",
    "ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "lift",
    "lift_ci_low",
    "lift_ci_high",
    "p_value",
    "p_value_holm",
    "significant",
    "chance_to_beat_control",
    "chance_to_be_best",
    "expected_loss",
    "sequential_ci_low",
    "sequential_ci_high",
    "sequential_p_value",
    "cuped_diff",
    "cuped_ci_low",
    "cuped_ci_high",
    "cuped_p_value",
    "error",
)


def _jsonable(value: Any) -> Any:
    """Turn NaN and infinities into None and dates into ISO 8601 strings, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.date):  # datetime.datetime too
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def report_to_dict(report: Report) -> dict[str, Any]:
    """Return the report as plain JSON-serialisable data keyed by the result types' field names."""
    return _jsonable(dataclasses.asdict(report))


def report_to_csv(report: Report) -> str:
    """Return one CSV row per arm and metric; the decision metric's rows carry sequential and CUPED numbers."""
    sequential = {r.arm: r for r in report.sequential.arms} if report.sequential else {}
    cuped = {r.arm: r for r in report.cuped.arms} if report.cuped else {}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for metric in report.metrics:
        for row in metric.arms:
            record = _jsonable(dataclasses.asdict(row))
            if metric.metric == report.decision_metric:
                seq, cup = sequential.get(row.arm), cuped.get(row.arm)
                if seq is not None:
                    record |= {
                        "sequential_ci_low": seq.ci_low,
                        "sequential_ci_high": seq.ci_high,
                        "sequential_p_value": seq.p_value,
                    }
                if cup is not None:
                    record |= {
                        "cuped_diff": cup.diff,
                        "cuped_ci_low": cup.diff_ci_low,
                        "cuped_ci_high": cup.diff_ci_high,
                        "cuped_p_value": cup.p_value,
                    }
            writer.writerow(record)
    return out.getvalue()
