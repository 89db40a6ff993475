"""Customer value in the shell: transactions in, a fitted CLV model and per-subject values out.

Transactions come from an imported file (subject, date, amount) and from the
conversion events the service already holds (their value is the amount). A fit
summarises them per subject (repeat purchases on distinct days, in weeks),
fits BG/NBD + Gamma-Gamma (reports/clv.py) and stores, per subject, the
expected discounted value over the horizon, the probability of being alive and
the expected purchases. Reports and decisions read those values.

Subject value precedence (documented in the README): a value the caller
supplied (the subject profile's `lifetime_value`, then the experiment's
`subject_value_field` in the decision context) > the model's estimate > the
experiment's `default_subject_value`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from experiments.numbers import finite_float
from experiments.history import read_records, required_subject_id
from experiments.outcomes import parse_timestamp
from reports.clv import ClvModel, customer_lifetime_value, expected_purchases, fit_clv_model, probability_alive
from reports.clv import summarise_transactions

from .bulk import bulk_write
from .clock import utcnow
from .errors import ApiError
from .models import ClvFit, Event, SubjectValue, Transaction

DEFAULT_HORIZON_WEEKS = 52
DEFAULT_WEEKLY_DISCOUNT = 0.0027  # about 15% a year


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


def fit(session: Session, *, horizon_weeks: int = DEFAULT_HORIZON_WEEKS,
        discount_rate: float = DEFAULT_WEEKLY_DISCOUNT) -> dict[str, Any]:
    """Fit the CLV model on every transaction and conversion; store it and the per-subject values."""
    subjects: list[str] = []
    times: list[np.datetime64] = []
    amounts: list[float] = []
    for subject, occurred, amount in session.execute(
        select(Transaction.subject_id, Transaction.occurred_at, Transaction.amount)
    ):
        subjects.append(subject)
        times.append(np.datetime64(occurred.replace(tzinfo=None), "us"))
        amounts.append(amount)
    for subject, occurred, amount in session.execute(
        select(Event.subject_id, Event.occurred_at, Event.value)
        .where(Event.type == "conversion", Event.subject_id.is_not(None))
    ):
        subjects.append(subject)
        times.append(np.datetime64(occurred.replace(tzinfo=None), "us"))
        amounts.append(amount or 0.0)
    if len(set(subjects)) < 10:
        raise ApiError(409, "at least 10 customers with purchases are needed to fit the value model",
                       code="not_enough_data")
    now = utcnow()
    ids, summary = summarise_transactions(np.array(subjects, dtype=object), np.array(times),
                                          np.array(amounts, dtype=float), np.datetime64(now.replace(tzinfo=None), "D"),
                                          time_unit="W")
    model = fit_clv_model(summary)
    if model.bgnbd.error or not model.bgnbd.converged:
        raise ApiError(409, f"the value model did not converge ({model.bgnbd.error or 'no convergence'})",
                       code="model_not_converged")
    values = model.lifetime_value(summary, horizon_weeks, discount_rate)
    alive = probability_alive(model.bgnbd, summary)
    purchases = expected_purchases(model.bgnbd, summary, float(horizon_weeks))
    row = ClvFit(model=model.to_dict(), customers=len(ids), calibration_end=now, horizon_periods=horizon_weeks,
                 discount_rate=discount_rate, created_at=now)
    session.add(row)
    session.flush()
    session.execute(delete(SubjectValue))
    records = [
        {"subject_id": str(ids[i]), "model_id": row.id, "expected_value": _safe(values[i]),
         "probability_alive": _safe(alive[i]), "expected_purchases": _safe(purchases[i]),
         "frequency": int(summary.frequency[i]), "recency": float(summary.recency[i]), "age": float(summary.T[i]),
         "monetary": float(summary.monetary_value[i])}
        for i in range(len(ids))
    ]
    for start in range(0, len(records), 20_000):
        bulk_write(session, SubjectValue, records[start:start + 20_000])
    return {"model_id": row.id, "customers": len(ids), "bgnbd": model.to_dict().get("bgnbd"),
            "gamma_gamma": model.to_dict().get("gamma_gamma"), "horizon_weeks": horizon_weeks,
            "discount_rate_per_week": discount_rate}


def _safe(value: float) -> float:
    number = float(value)
    return number if np.isfinite(number) else 0.0


def latest_model(session: Session) -> tuple[ClvFit, ClvModel] | None:
    row = session.scalars(select(ClvFit).order_by(ClvFit.id.desc()).limit(1)).first()
    return (row, ClvModel.from_dict(row.model)) if row is not None else None


__all__ = ["import_transactions", "fit", "latest_model", "customer_lifetime_value"]
