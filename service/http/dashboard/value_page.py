"""The value page: the last CLV fit, its parameters and, when it had a holdout, how well it predicted it."""

from __future__ import annotations

from typing import Any

from flask import render_template
from markupsafe import Markup
from sqlalchemy import func, select

from service.store import db
from service.usecases.value import as_of_text
from service.store.models import ClvFit, SubjectValue, Transaction
from service.http.dashboard import value_charts
from service.http.dashboard.blueprint import bp

MODEL_NAMES = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD"}


@bp.get("/value")
def value() -> str:
    """Customer value: the latest fit, what it rests on, and its holdout chart."""
    database = db.session()
    fit = database.scalars(select(ClvFit).order_by(ClvFit.id.desc()).limit(1)).first()
    purchases = database.scalar(select(func.count()).select_from(Transaction)) or 0
    context: dict[str, Any] = {"fit": None, "purchases": purchases, "charts": [], "validation": None}
    if fit is not None:
        stored = fit.model or {}
        purchase = stored.get("bgnbd") or {}
        one_time = database.scalar(select(func.count()).select_from(SubjectValue)
                                   .where(SubjectValue.model_id == fit.id, SubjectValue.frequency == 0)) or 0
        validation = fit.validation
        context.update(
            fit=fit,
            model_name=MODEL_NAMES.get(purchase.get("model", "bgnbd"), purchase.get("model")),
            purchase=purchase,
            spend=stored.get("gamma_gamma") or {},
            calibration_end=as_of_text(fit.calibration_end),
            one_time=one_time,
            validation=validation,
            charts=[
                {"name": c.name, "title": c.title, "note": c.note, "svg": Markup(c.svg)}  # noqa: S704 - our own SVG
                for c in (value_charts.holdout_charts(validation) if validation else [])
            ],
        )
    return render_template("dashboard/value.html", **context)
