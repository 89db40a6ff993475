"""Customer value: import purchase history and fit the CLV model that reports and decisions use."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from .. import db
from ..app import BEARER
from ..value import DEFAULT_HORIZON_WEEKS, DEFAULT_WEEKLY_DISCOUNT, fit, import_transactions
from .imports import _BODY_DOC, uploaded_file
from .scoping import optional_body, requires

api = APIBlueprint("value", __name__, url_prefix="/v1", abp_tags=[Tag(name="value")], abp_security=BEARER)


class TransactionImportResult(BaseModel):
    imported: int
    duplicates: int
    rejected: list[dict[str, Any]]
    rejected_count: int


class FitResult(BaseModel):
    model_id: int
    customers: int
    bgnbd: dict[str, Any] | None
    gamma_gamma: dict[str, Any] | None
    horizon_weeks: int
    discount_rate_per_week: float


class FitBody(BaseModel):
    horizon_weeks: int = Field(default=DEFAULT_HORIZON_WEEKS, ge=1, le=520)
    discount_rate_per_week: float = Field(default=DEFAULT_WEEKLY_DISCOUNT, ge=0, lt=1)


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
    """Fit BG/NBD + Gamma-Gamma on every purchase and conversion; store per-subject values."""
    body = optional_body(FitBody)
    session = db.session()
    result = fit(session, horizon_weeks=body.horizon_weeks, discount_rate=body.discount_rate_per_week)
    session.commit()
    return jsonify(result)
