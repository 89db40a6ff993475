"""Customer value in the shell: transactions in, a fitted CLV model and per-subject values out.

Transactions come from an imported file (subject, date, amount) and from the
conversion events the service already holds (their value is the amount). A fit
reads those made up to its `as_of` moment (default now) in one fetch, summarises
them per subject (repeat purchases on distinct UTC days; recency and T in weeks
to the as_of day), fits BG/NBD or MBG/NBD + Gamma-Gamma (reports/clv.py) and
stores, per subject, the expected discounted value over the horizon, the
probability of being alive and the expected purchases. Reports and decisions read
those values. With a `holdout_end`, the fit is also checked against the purchases
made after as_of (reports/clv_holdout.py) and the comparison is stored with it.

Subject value precedence (documented in the README): a value the caller
supplied (the subject profile's `lifetime_value`, then the experiment's
`subject_value_field` in the decision context) > the model's estimate > the
experiment's `default_subject_value`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.orm import Session

from experiments.numbers import finite_float
from experiments.history import read_records, required_subject_id
from experiments.outcomes import parse_timestamp
from reports.clv import ClvModel, PurchaseModel, customer_lifetime_value, expected_purchases, fit_clv_model
from reports.clv import probability_alive, summarise_transactions
from reports.clv_holdout import holdout_purchases, validate_holdout

from service.store.bulk import bulk_write
from service.clock import iso_utc, utcnow
from service.store.db import DriverStatement, session_driver
from service.http.errors import ApiError
from service.store.models import ClvFit, SubjectValue, Timestamp, Transaction

DEFAULT_HORIZON_WEEKS = 52
DEFAULT_WEEKLY_DISCOUNT = 0.0027  # about 15% a year
# Chosen on CDNOW's holdout (README, "Lifetime value"): fitted to 1997-09-30 on the master
# file, BG/NBD predicted the 39-week holdout better than MBG/NBD in aggregate and per customer.
DEFAULT_PURCHASE_MODEL: PurchaseModel = "bgnbd"


def import_transactions(session: Session, data: bytes, fmt: str) -> dict[str, Any]:
    """Rows of subject_id, occurred_at (or date YYYY-MM-DD), amount, optional transaction_id."""
    rows, rejected = [], []
    now = utcnow()
    records = [(line, record) for line, record, _ in read_records(data, fmt)]
    for line, record in records:
        try:
            if not isinstance(record, dict):
                raise ValueError(record if isinstance(record, str) else "not an object")
            subject = required_subject_id(record)
            raw_time = record.get("occurred_at") or record.get("date")
            if isinstance(raw_time, str) and len(raw_time.strip()) == 10:
                occurred = datetime.fromisoformat(raw_time.strip()).replace(tzinfo=timezone.utc)
            else:
                occurred = parse_timestamp(raw_time, "occurred_at")
            if occurred > now:
                raise ValueError("occurred_at is in the future")
            amount = finite_float(_number(record.get("amount")))
            if amount is None or amount < 0:
                raise ValueError("amount must be a non-negative number")
            external = record.get("transaction_id") or hashlib.sha256(
                f"{line}:{json.dumps(record, sort_keys=True, default=str)}".encode()).hexdigest()[:40]
            rows.append({"external_id": f"tx:{external}", "subject_id": subject, "occurred_at": occurred,
                         "amount": amount, "source": "import", "created_at": now})
        except ValueError as exc:
            rejected.append({"line": line, "reason": str(exc)})
    inserted = 0
    for start in range(0, len(rows), 20_000):
        inserted += len(bulk_write(session, Transaction, rows[start:start + 20_000], conflict=["external_id"],
                                   on_conflict="nothing", returning="external_id"))
    return {"imported": inserted, "duplicates": len(rows) - inserted, "rejected": rejected[:1000],
            "rejected_count": len(rejected)}


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return value


@dataclass(frozen=True, slots=True)
class Moment:
    """A point in time given as a date (the whole day counts) or a timestamp: what as_of and holdout_end mean."""

    cutoff: datetime  # purchases strictly before this count
    day: date  # the UTC calendar day T and the holdout's length are measured to
    text: str  # in the answer: the date, or the timestamp in UTC

    @property
    def last_included(self) -> datetime:
        return self.cutoff - timedelta(microseconds=1)


def parse_moment(value: Any, name: str) -> Moment:
    """Read "YYYY-MM-DD" (through the end of that UTC day) or an ISO 8601 timestamp with a zone."""
    try:
        return _moment(value, name)
    except OverflowError:
        raise ValueError(f"{name} is out of range: {str(value)[:40]!r}") from None


def _moment(value: Any, name: str) -> Moment:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} needs a time zone offset (e.g. Z or +01:00)")
        moment = value.astimezone(timezone.utc)
        return Moment(moment + timedelta(microseconds=1), moment.date(), iso_utc(moment) or "")
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        return Moment(start + timedelta(days=1), value, value.isoformat())
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 timestamp with a time zone")
    text = value.strip()
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name} is not a date (YYYY-MM-DD): {text[:40]!r}") from None
        return _moment(day, name)
    return _moment(parse_timestamp(text, name), name)


def as_of_text(calibration_end: datetime) -> str:
    """How a stored fit's calibration end reads: the date when it ran through the end of a day."""
    end = calibration_end.astimezone(timezone.utc)
    if (end + timedelta(microseconds=1)).time() == datetime.min.time():
        return end.date().isoformat()
    return iso_utc(end) or ""


def _day_number(dialect: str, column: str) -> str:
    """SQL for the UTC calendar day of a timestamp column, as days since 1970-01-01."""
    if dialect == "postgresql":
        return f"((({column}) AT TIME ZONE 'UTC')::date - DATE '1970-01-01')"
    # SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS...' text; julianday of a date is x.5.
    return f"CAST(julianday(date({column})) - 2440587.5 AS INTEGER)"


def load_purchases(session: Session, cutoff: datetime, until: datetime) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                                   np.ndarray, np.ndarray]:
    """Every purchase before `until` in one fetch: imported transactions and conversion events.

    Returns the distinct subject ids and, per purchase, the index of its subject, its UTC
    day (days since 1970-01-01), its amount and whether it was made at or after `cutoff`
    (the holdout). The database computes the day, so no timestamp is parsed in Python.
    """
    dialect = session.get_bind().dialect
    day = _day_number(dialect.name, "occurred_at")
    statement = text(
        f"SELECT subject_id, {day}, amount, CASE WHEN occurred_at >= :cutoff THEN 1 ELSE 0 END"
        " FROM transactions WHERE occurred_at < :until"
        " UNION ALL "
        f"SELECT subject_id, {day}, COALESCE(value, 0.0), CASE WHEN occurred_at >= :cutoff THEN 1 ELSE 0 END"
        " FROM events WHERE type = 'conversion' AND subject_id IS NOT NULL AND occurred_at < :until"
    ).bindparams(bindparam("cutoff", type_=Timestamp), bindparam("until", type_=Timestamp))
    # Straight on the driver: plain tuples, without a result row object per purchase.
    with session_driver(session) as raw:
        rows = DriverStatement(statement, dialect, {"cutoff": Timestamp, "until": Timestamp}).fetch_all(
            raw, {"cutoff": cutoff, "until": until})
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return [], empty, empty, np.zeros(0), np.zeros(0, dtype=bool)
    subjects, days, amounts, after = zip(*rows, strict=True)
    codes: dict[str, int] = {}
    customer = np.fromiter((codes.setdefault(s, len(codes)) for s in subjects), dtype=np.int64, count=len(rows))
    return (list(codes), customer, np.asarray(days, dtype=np.int64), np.asarray(amounts, dtype=np.float64),
            np.asarray(after, dtype=bool))


def fit(session: Session, *, as_of: Moment | None = None, holdout_end: Moment | None = None,
        model: PurchaseModel = DEFAULT_PURCHASE_MODEL, horizon_weeks: int = DEFAULT_HORIZON_WEEKS,
        discount_rate: float = DEFAULT_WEEKLY_DISCOUNT) -> dict[str, Any]:
    """Fit the CLV model on the purchases up to `as_of` (default now); store it and the per-subject values.

    Repeat purchases count distinct UTC days; recency and T are in weeks, whole days
    divided by 7, from the first purchase day to the as_of day (the convention of
    Fader, Hardie & Lee's CDNOW calibration). With `holdout_end`, the model's
    predictions for the calibration customers are compared with what they bought
    after as_of, through holdout_end (reports/clv_holdout.py).
    """
    now = utcnow()
    as_of = as_of or parse_moment(now, "as_of")
    if as_of.day > now.date() or as_of.last_included > now:
        raise ApiError(422, "as_of must not be in the future", details=[{"field": "as_of", "message": "in the future"}])
    if holdout_end is not None:
        if holdout_end.day <= as_of.day:
            raise ApiError(422, "holdout_end must be a later day than as_of",
                           details=[{"field": "holdout_end", "message": "not after as_of"}])
        if holdout_end.cutoff > now:
            raise ApiError(422, "holdout_end must have passed: the holdout has to be complete",
                           details=[{"field": "holdout_end", "message": "in the future"}])
    until = holdout_end.cutoff if holdout_end is not None else as_of.cutoff
    subjects, customer, days, amounts, after = load_purchases(session, as_of.cutoff, until)

    calibration = ~after
    as_of_day = np.datetime64(as_of.day, "D")
    codes, summary = summarise_transactions(customer[calibration], days[calibration].astype("datetime64[D]"),
                                            amounts[calibration], as_of_day, time_unit="W")
    if len(codes) < 10:
        raise ApiError(409, "at least 10 customers with purchases are needed to fit the value model",
                       code="not_enough_data")
    clv_model = fit_clv_model(summary, model)
    if clv_model.bgnbd.error or not clv_model.bgnbd.converged:
        raise ApiError(409, f"the value model did not converge ({clv_model.bgnbd.error or 'no convergence'})",
                       code="model_not_converged")
    validation = None
    if holdout_end is not None:
        holdout = holdout_purchases(codes, customer[after], days[after].astype("datetime64[D]"), as_of_day,
                                    np.datetime64(holdout_end.day, "D"), "W")
        validation = {"as_of": as_of.text, "holdout_end": holdout_end.text,
                      **validate_holdout(clv_model.bgnbd, summary, holdout).to_dict()}

    values = clv_model.lifetime_value(summary, horizon_weeks, discount_rate)
    alive = probability_alive(clv_model.bgnbd, summary)
    purchases = expected_purchases(clv_model.bgnbd, summary, float(horizon_weeks))
    stored = clv_model.to_dict()
    row = ClvFit(model=stored, customers=len(codes), calibration_end=as_of.last_included,
                 horizon_periods=horizon_weeks, discount_rate=discount_rate, created_at=now, validation=validation)
    session.add(row)
    session.flush()
    _store_values(session, row.id, [subjects[c] for c in codes.tolist()], {
        "expected_value": values, "probability_alive": alive, "expected_purchases": purchases,
        "frequency": summary.frequency, "recency": summary.recency, "age": summary.T,
        "monetary": summary.monetary_value,
    })
    return {"model_id": row.id, "customers": len(codes), "model": model, "as_of": as_of.text,
            "calibration_end": as_of.day.isoformat(), "time_unit": "W",
            "one_time_buyers": int(np.count_nonzero(summary.frequency == 0)),
            "bgnbd": stored.get("bgnbd"), "gamma_gamma": stored.get("gamma_gamma"),
            "horizon_weeks": horizon_weeks, "discount_rate_per_week": discount_rate, "holdout": validation}


def _store_values(session: Session, model_id: int, ids: list[str], columns: dict[str, np.ndarray]) -> None:
    """Replace every subject's stored values with this fit's, in bulk (non-finite numbers stored as 0)."""
    session.execute(delete(SubjectValue))
    lists = [np.where(np.isfinite(v), v, 0).tolist() if v.dtype.kind == "f" else v.tolist() for v in columns.values()]
    names = ["subject_id", "model_id", *columns]
    if session.get_bind().dialect.name == "sqlite":
        # executemany of plain tuples on the driver: the ORM's bulk insert costs ~25 us a row in Python.
        rows = list(zip(ids, itertools.repeat(model_id), *lists))
        session.connection().exec_driver_sql(
            f"INSERT INTO subject_values ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", rows)
        return
    records = [dict(zip(names, values, strict=True)) for values in zip(ids, itertools.repeat(model_id), *lists)]
    for start in range(0, len(records), 50_000):
        bulk_write(session, SubjectValue, records[start:start + 50_000])


def latest_model(session: Session) -> tuple[ClvFit, ClvModel] | None:
    row = session.scalars(select(ClvFit).order_by(ClvFit.id.desc()).limit(1)).first()
    return (row, ClvModel.from_dict(row.model)) if row is not None else None


__all__ = ["import_transactions", "fit", "latest_model", "customer_lifetime_value", "parse_moment", "Moment",
           "load_purchases", "as_of_text"]
