"""Holdout validation of a purchase model: fit on a calibration period, compare with what came next.

The comparisons of Fader, Hardie & Lee (2005, "Counting your customers the easy
way", figures 3 and 4), as lifetimes' `calibration_and_holdout_data` and
PyMC-Marketing prepare them:

- by number of calibration repeat purchases (0, 1, ..., 7+): the mean number of
  repeat purchases each group made in the holdout, next to the mean the model
  expected of them given their history (the conditional expectation);
- in aggregate per week: cumulative repeat purchases of the calibration customers
  in the holdout, actual against the sum of their conditional expectations;
- per customer: the mean absolute and root-mean-square error of those expectations.

Repeat purchases in the holdout are counted on distinct days, like the
calibration frequency; customers first seen after the calibration period are
not part of the comparison (the model has no history for them).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .clv import _DAYS_PER_UNIT, BgNbdFit, PurchaseModel, RfmSummary, TimeUnit, _as_days, expected_purchases
from .clv import summarise_transactions

__all__ = [
    "FrequencyGroup",
    "Holdout",
    "HoldoutValidation",
    "calibration_and_holdout",
    "holdout_purchases",
    "validate_holdout",
]

FloatArray = NDArray[np.float64]
PERIOD_DAYS = 7  # the aggregate comparison is weekly, as in FHL 2005, figure 3


@dataclass(frozen=True, slots=True)
class Holdout:
    """What the calibration customers bought after the calibration period.

    frequency: repeat purchases (distinct days) of each calibration customer in the holdout,
    in the calibration summary's order; period_counts: those purchases per period;
    period_ends: the end of each period in time units after the calibration end (the last
    one is `length`, the holdout's length).
    """

    frequency: NDArray[np.int64]
    period_counts: NDArray[np.int64]
    period_ends: FloatArray
    length: float
    time_unit: TimeUnit = "W"

    def __post_init__(self) -> None:
        if not (self.length > 0 and math.isfinite(self.length)):
            raise ValueError(f"length must be a finite number > 0, got {self.length}")
        if self.period_counts.shape != self.period_ends.shape:
            raise ValueError(
                f"period_counts and period_ends must have equal lengths, got {self.period_counts.shape[0]} "
                f"and {self.period_ends.shape[0]}"
            )


def _end_day(value: np.datetime64 | dt.date | str, name: str) -> np.datetime64:
    try:
        day = np.datetime64(value, "D")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a date, got {value!r}") from exc
    if np.isnat(day):
        raise ValueError(f"{name} must be a date, got NaT")
    return day


def holdout_purchases(
    calibration_ids: ArrayLike,
    subject_ids: ArrayLike,
    timestamps: ArrayLike,
    calibration_end: np.datetime64 | dt.date | str,
    holdout_end: np.datetime64 | dt.date | str,
    time_unit: TimeUnit = "W",
    period_days: int = PERIOD_DAYS,
) -> Holdout:
    """Count each calibration customer's repeat purchases in (calibration_end, holdout_end], and per period.

    `calibration_ids` are the sorted ids `summarise_transactions` returned; the other rows
    are purchases made after the calibration period (any customer; those not in the
    calibration are ignored, as are rows dated after `holdout_end`). A row dated on the
    calibration end day itself (a calibration that ended at a time of day) counts in the
    first period. The holdout is measured in whole days: (holdout_end - calibration_end).
    """
    if time_unit not in _DAYS_PER_UNIT:
        raise ValueError(f"time_unit must be 'W' or 'D', got {time_unit!r}")
    if isinstance(period_days, bool) or not isinstance(period_days, (int, np.integer)) or period_days < 1:
        raise ValueError(f"period_days must be a whole number >= 1, got {period_days!r}")
    start = _end_day(calibration_end, "calibration_end")
    end = _end_day(holdout_end, "holdout_end")
    span = int((end - start).astype(np.int64))
    if span < 1:
        raise ValueError(f"holdout_end must be after calibration_end, got {end} <= {start}")
    known = np.asarray(calibration_ids)
    ids = np.asarray(subject_ids)
    days = _as_days(timestamps, "timestamps")
    if ids.ndim != 1 or ids.shape != days.shape:
        raise ValueError(f"subject_ids and timestamps must be one-dimensional of equal length, got {ids.shape}, {days.shape}")
    if known.size > 1 and np.any(known[1:] <= known[:-1]):
        raise ValueError("calibration_ids must be sorted and unique, as summarise_transactions returns them")

    offset = (days - start).astype(np.int64)
    if offset.size and offset.min() < 0:
        raise ValueError(f"holdout purchases must be dated after calibration_end, got {days[offset.argmin()]}")
    keep = offset <= span
    ids, offset = ids[keep], offset[keep]
    if known.size and ids.size:
        position = np.minimum(np.searchsorted(known, ids), known.size - 1)
        member = known[position] == ids
    else:
        position, member = np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=bool)
    customer, offset = position[member].astype(np.int64), offset[member]
    # Distinct (customer, day) pairs; the calibration end day itself joins the first day after it.
    offset = np.maximum(offset, 1)
    pairs = np.unique(customer * (span + 1) + offset)
    customer, offset = pairs // (span + 1), pairs % (span + 1)

    unit = _DAYS_PER_UNIT[time_unit]
    n_periods = -(-span // period_days)
    period_ends = np.minimum(np.arange(1, n_periods + 1) * period_days, span) / unit
    return Holdout(
        frequency=np.bincount(customer, minlength=known.size).astype(np.int64),
        period_counts=np.bincount((offset - 1) // period_days, minlength=n_periods).astype(np.int64),
        period_ends=period_ends,
        length=span / unit,
        time_unit=time_unit,
    )


def calibration_and_holdout(
    subject_ids: ArrayLike,
    timestamps: ArrayLike,
    amounts: ArrayLike,
    calibration_end: np.datetime64 | dt.date | str,
    holdout_end: np.datetime64 | dt.date | str,
    time_unit: TimeUnit = "W",
) -> tuple[np.ndarray, RfmSummary, Holdout]:
    """Split a transaction log at a day: the calibration summary, and the holdout counts of its customers."""
    ids = np.asarray(subject_ids)
    days = _as_days(timestamps, "timestamps")
    start = _end_day(calibration_end, "calibration_end")
    after = days > start
    calibration_ids, summary = summarise_transactions(ids, days, amounts, start, time_unit)
    holdout = holdout_purchases(calibration_ids, ids[after], days[after], start, holdout_end, time_unit)
    return calibration_ids, summary, holdout


@dataclass(frozen=True, slots=True)
class FrequencyGroup:
    """Customers with `frequency` calibration repeat purchases (or more, when `and_more`)."""

    frequency: int
    and_more: bool
    customers: int
    actual: float  # mean repeat purchases in the holdout
    predicted: float  # mean conditional expectation

    @property
    def label(self) -> str:
        return f"{self.frequency}+" if self.and_more else str(self.frequency)


@dataclass(frozen=True, slots=True)
class HoldoutValidation:
    """How well a purchase model fitted on the calibration period predicted the holdout."""

    model: PurchaseModel
    customers: int
    length: float
    time_unit: TimeUnit
    by_frequency: tuple[FrequencyGroup, ...]
    period_ends: FloatArray
    actual_cumulative: FloatArray
    predicted_cumulative: FloatArray
    actual_total: float
    predicted_total: float
    mae: float  # mean over customers of |actual - predicted| holdout purchases
    rmse: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form; non-finite numbers become null."""
        return {
            "model": self.model,
            "customers": self.customers,
            "length": self.length,
            "time_unit": self.time_unit,
            "actual_total": _json(self.actual_total),
            "predicted_total": _json(self.predicted_total),
            "mae": _json(self.mae),
            "rmse": _json(self.rmse),
            "error": self.error,
            "by_frequency": [
                {"frequency": g.label, "customers": g.customers, "actual": _json(g.actual),
                 "predicted": _json(g.predicted)}
                for g in self.by_frequency
            ],
            "cumulative": [
                {"period": i + 1, "end": float(end), "actual": _json(actual), "predicted": _json(predicted)}
                for i, (end, actual, predicted) in enumerate(
                    zip(self.period_ends, self.actual_cumulative, self.predicted_cumulative, strict=True)
                )
            ],
        }


def _json(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def validate_holdout(fit: BgNbdFit, summary: RfmSummary, holdout: Holdout, max_frequency: int = 7) -> HoldoutValidation:
    """Compare the model's conditional expectations for the holdout with the purchases made in it.

    Customers are grouped by calibration repeat purchases 0 .. max_frequency - 1 and
    max_frequency or more (FHL 2005, figure 4 uses 7+).
    """
    if summary.time_unit != holdout.time_unit:
        raise ValueError(f"holdout time_unit must be the summary's {summary.time_unit!r}, got {holdout.time_unit!r}")
    if holdout.frequency.shape[0] != len(summary):
        raise ValueError(
            f"holdout must count every calibration customer: {holdout.frequency.shape[0]} counts "
            f"for {len(summary)} customers"
        )
    if isinstance(max_frequency, bool) or not isinstance(max_frequency, (int, np.integer)) or max_frequency < 1:
        raise ValueError(f"max_frequency must be a whole number >= 1, got {max_frequency!r}")
    actual = holdout.frequency.astype(np.float64)
    actual_cumulative = np.cumsum(holdout.period_counts).astype(np.float64)
    n = len(summary)
    if fit.error is not None or n == 0:
        nan = np.full(holdout.period_ends.shape, np.nan)
        return HoldoutValidation(fit.model, n, holdout.length, holdout.time_unit, (), holdout.period_ends,
                                 actual_cumulative, nan, float(actual.sum()), math.nan, math.nan, math.nan,
                                 fit.error or "NO_CUSTOMERS")
    predicted = expected_purchases(fit, summary, holdout.length)
    predicted_cumulative = expected_purchases(fit, summary, holdout.period_ends[:, None]).sum(axis=1)
    group = np.minimum(summary.frequency, max_frequency)
    customers = np.bincount(group, minlength=max_frequency + 1)
    actual_sum = np.bincount(group, weights=actual, minlength=max_frequency + 1)
    predicted_sum = np.bincount(group, weights=predicted, minlength=max_frequency + 1)
    groups = tuple(
        FrequencyGroup(k, k == max_frequency, int(customers[k]), float(actual_sum[k] / customers[k]),
                       float(predicted_sum[k] / customers[k]))
        for k in range(max_frequency + 1)
        if customers[k] > 0
    )
    residual = actual - predicted
    return HoldoutValidation(
        model=fit.model,
        customers=n,
        length=holdout.length,
        time_unit=holdout.time_unit,
        by_frequency=groups,
        period_ends=holdout.period_ends,
        actual_cumulative=actual_cumulative,
        predicted_cumulative=predicted_cumulative,
        actual_total=float(actual.sum()),
        predicted_total=float(predicted.sum()),
        mae=float(np.abs(residual).mean()),
        rmse=float(np.sqrt(np.mean(residual * residual))),
    )
