"""Holdout validation on CDNOW, checked against a plain-Python count of the raw purchase log.

The calibration/holdout split of Fader, Hardie & Lee (2005): calibration to
1997-09-30 (39 weeks after the first acquisitions), holdout 1997-10-01..1998-06-30
(39 weeks). Repeat purchases count distinct days, in the calibration and in the holdout.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import pytest

from reports.clv import expected_purchases, fit_bgnbd, fit_mbgnbd
from reports.clv_holdout import calibration_and_holdout, holdout_purchases, validate_holdout
from tests.reports.test_clv import _days, _load

CAL_END = dt.date(1997, 9, 30)
HOLDOUT_END = dt.date(1998, 6, 30)


@pytest.fixture(scope="module")
def master() -> np.ndarray:
    return _load("CDNOW_master.txt", 1)


def _count_by_hand(raw: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """Holdout repeat-purchase days per calibration customer, and per holdout week, with sets and dates."""
    first: dict[int, dt.date] = {}
    days: dict[int, set[dt.date]] = defaultdict(set)
    for customer, yyyymmdd in zip(raw[:, 0].astype(int), raw[:, 1].astype(int), strict=True):
        day = dt.date(yyyymmdd // 10000, yyyymmdd // 100 % 100, yyyymmdd % 100)
        first[customer] = min(first.get(customer, day), day)
        if CAL_END < day <= HOLDOUT_END:
            days[customer].add(day)
    per_customer = {c: len(days[c]) for c in first if first[c] <= CAL_END}
    per_week: dict[int, int] = defaultdict(int)
    for customer, holdout_days in days.items():
        if first[customer] <= CAL_END:
            for day in holdout_days:
                per_week[((day - CAL_END).days - 1) // 7] += 1  # week 0 is 1997-10-01..10-07
    return per_customer, per_week


def test_holdout_counts_match_a_count_by_hand(master: np.ndarray) -> None:
    ids, summary, holdout = calibration_and_holdout(master[:, 0].astype(np.int64), _days(master[:, 1]), master[:, 3],
                                                    CAL_END, HOLDOUT_END)
    per_customer, per_week = _count_by_hand(master)
    assert len(ids) == 23570 == len(per_customer)
    assert holdout.length == 39.0 and holdout.period_ends.tolist() == list(range(1, 40))
    assert holdout.frequency.tolist() == [per_customer[int(c)] for c in ids]
    assert holdout.period_counts.tolist() == [per_week[w] for w in range(39)]
    assert int(holdout.frequency.sum()) == 19684


def test_validation_compares_conditional_expectations_with_the_holdout(master: np.ndarray) -> None:
    _, summary, holdout = calibration_and_holdout(master[:, 0].astype(np.int64), _days(master[:, 1]), master[:, 3],
                                                  CAL_END, HOLDOUT_END)
    for fit in (fit_bgnbd(summary), fit_mbgnbd(summary)):
        result = validate_holdout(fit, summary, holdout)
        predicted = expected_purchases(fit, summary, 39.0)
        actual = holdout.frequency
        assert result.customers == 23570 and result.model == fit.model
        assert result.mae == pytest.approx(np.mean(np.abs(actual - predicted)), rel=1e-12)
        assert result.rmse == pytest.approx(np.sqrt(np.mean((actual - predicted) ** 2)), rel=1e-12)
        assert result.predicted_total == pytest.approx(predicted.sum(), rel=1e-12)
        assert result.predicted_cumulative[-1] == pytest.approx(predicted.sum(), rel=1e-12)
        assert np.all(np.diff(result.predicted_cumulative) > 0)
        assert result.actual_cumulative[-1] == 19684
        labels = [g.label for g in result.by_frequency]
        assert labels == ["0", "1", "2", "3", "4", "5", "6", "7+"]
        for group in result.by_frequency:
            members = summary.frequency >= 7 if group.and_more else summary.frequency == group.frequency
            assert group.customers == members.sum()
            assert group.actual == pytest.approx(actual[members].mean())
            assert group.predicted == pytest.approx(predicted[members].mean())
        as_json = result.to_dict()
        assert as_json["by_frequency"][7]["frequency"] == "7+" and len(as_json["cumulative"]) == 39


def test_rows_outside_the_holdout_and_strangers_are_left_out() -> None:
    ids = np.array(["a", "b", "c"])
    rows = np.array(["a", "a", "a", "z", "b", "b"])
    days = np.array(["2024-01-31", "2024-02-01", "2024-02-01", "2024-02-02", "2024-02-08", "2024-03-01"],
                    dtype="datetime64[D]")
    h = holdout_purchases(ids, rows, days, "2024-01-31", "2024-02-10")
    # a: its calibration end day (a calibration that ended at a time of day) joins the first day after it
    assert h.frequency.tolist() == [1, 1, 0]
    assert h.period_counts.tolist() == [1, 1] and h.period_ends.tolist() == [1.0, 10 / 7]
    with pytest.raises(ValueError, match="holdout_end must be after calibration_end"):
        holdout_purchases(ids, rows, days, "2024-02-10", "2024-02-10")
    with pytest.raises(ValueError, match="dated after calibration_end"):
        holdout_purchases(ids, rows, days, "2024-02-05", "2024-02-10")
    with pytest.raises(ValueError, match="sorted and unique"):
        holdout_purchases(ids[::-1], rows, days, "2024-01-31", "2024-02-10")
