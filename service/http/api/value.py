"""Customer value: import purchase history and fit the CLV model that reports and decisions use."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, field_validator

from service.store import db
from service.http.auth import BEARER
from service.usecases.value import DEFAULT_HORIZON_WEEKS, DEFAULT_PURCHASE_MODEL, DEFAULT_WEEKLY_DISCOUNT, fit, import_transactions
from service.usecases.value import parse_moment
from service.http.api.imports import _BODY_DOC, uploaded_file
from service.http.api.scoping import optional_body, requires

api = APIBlueprint("value", __name__, url_prefix="/v1", abp_tags=[Tag(name="value")], abp_security=BEARER)


class TransactionImportResult(BaseModel):
    imported: int
    duplicates: int
    rejected: list[dict[str, Any]]
    rejected_count: int


class FitResult(BaseModel):
    model_id: int
    customers: int
    model: Literal["bgnbd", "mbgnbd"]
    as_of: str
    calibration_end: str = Field(description="the UTC day recency and T are measured to")
    time_unit: str
    one_time_buyers: int = Field(description="customers whose value rests on one purchase (no repeat by as_of)")
    bgnbd: dict[str, Any] | None = Field(description="the purchase model's parameters (BG/NBD or MBG/NBD)")
    gamma_gamma: dict[str, Any] | None
    horizon_weeks: int
    discount_rate_per_week: float
    holdout: dict[str, Any] | None = Field(description="with holdout_end: predicted against actual repeat purchases "
                                           "after as_of, by calibration purchases, per week, and per customer")


class FitBody(BaseModel):
    as_of: str | None = Field(default=None, max_length=64, description=(
        "calibrate on purchases up to then: a date YYYY-MM-DD (through the end of that UTC day) or an ISO 8601 "
        "timestamp with a zone; T and recency are measured to its day. Default: now"))
    holdout_end: str | None = Field(default=None, max_length=64, description=(
        "compare the model's predictions with the purchases made after as_of through this date or timestamp"))
    model: Literal["bgnbd", "mbgnbd"] = Field(default=DEFAULT_PURCHASE_MODEL, description=(
        "bgnbd: customers drop out only after a repeat purchase; mbgnbd (Batislam et al. 2007): also after the "
        "first, so one-time buyers can have left"))
    horizon_weeks: int = Field(default=DEFAULT_HORIZON_WEEKS, ge=1, le=520)
    discount_rate_per_week: float = Field(default=DEFAULT_WEEKLY_DISCOUNT, ge=0, lt=1)

    @field_validator("as_of", "holdout_end")
    @classmethod
    def _moment(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            parse_moment(value, info.field_name)
        return value


@api.post("/transactions/import", responses={200: TransactionImportResult}, openapi_extensions=_BODY_DOC)
@requires("value", "analyst")
def import_purchases() -> Response:
    """Import purchases (subject_id, occurred_at or date, amount, optional transaction_id) for the CLV model."""
    data, fmt = uploaded_file()
    session = db.session()
    result = import_transactions(session, data, fmt)
    session.commit()
    return jsonify(result)


@api.post("/clv/fit", responses={200: FitResult})
@requires("value", "analyst")
def fit_value_model() -> Response:
    """Fit BG/NBD (or MBG/NBD) + Gamma-Gamma on the purchases up to as_of; store per-subject values.

    With holdout_end, also compare the predictions with the purchases made after as_of.
    """
    body = optional_body(FitBody)
    session = db.session()
    result = fit(session, as_of=parse_moment(body.as_of, "as_of") if body.as_of else None,
                 holdout_end=parse_moment(body.holdout_end, "holdout_end") if body.holdout_end else None,
                 model=body.model, horizon_weeks=body.horizon_weeks, discount_rate=body.discount_rate_per_week)
    session.commit()
    return jsonify(result)
