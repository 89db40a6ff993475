"""Subject pages: one customer's profile, engagement, value, best channel, suppressions and recent
decisions, each decision linking to its explanation."""

from __future__ import annotations

import logging
from typing import Any

from flask import redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from service.store import db
from service.usecases.explain import explain
from service.store.models import Experiment
from service.usecases.profiles import profile
from service.http.dashboard.blueprint import bp

log = logging.getLogger("nextbest")


@bp.get("/subjects")
def subject_lookup() -> Response | str:
    """The look-up form; a submitted id goes to its page."""
    subject_id = (request.args.get("subject_id") or "").strip()
    if subject_id:
        return redirect(url_for(".subject", subject_id=subject_id), 303)
    return render_template("dashboard/subject_lookup.html")


@bp.get("/subjects/<path:subject_id>")
def subject(subject_id: str) -> str:
    """What nextbest holds and computes for one subject, as `GET /v1/subjects/{id}` gives it."""
    database = db.session()
    body = profile(database, subject_id)
    ids = {d["experiment_id"] for d in body["recent_decisions"]}
    keys = dict(database.execute(select(Experiment.id, Experiment.key).where(Experiment.id.in_(ids))).all()) if ids else {}
    for decision in body["recent_decisions"]:
        decision["experiment"] = keys.get(decision["experiment_id"], "?")
    return render_template("dashboard/subject.html", subject=body, attributes=_attribute_rows(body),
                           arbitration=_arbitration(database, subject_id))


def _arbitration(database: Any, subject_id: str) -> dict[str, Any]:
    """What next best action would pick for the subject now, and why (a dry run: nothing is stored)."""
    from service.http.api.decisions import runtime_cache
    from service.usecases.nba import next_best_action

    try:
        return next_best_action(database, runtime_cache(), db.session, subject_id, None, None, dry_run=True)
    except Exception:  # the page must show the profile even when arbitration cannot run
        log.exception("next best action dry run for the dashboard failed")
        database.rollback()
        return {"error": "Next best action could not be evaluated; the error has been logged."}


@bp.get("/assignments/<assignment_id>")
def assignment(assignment_id: str) -> str:
    """Why one decision was made: policy, features, propensity and every contact rule checked."""
    return render_template("dashboard/assignment.html", decision=explain(db.session(), assignment_id))


def _attribute_rows(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The supplied profile as (name, value) lines; nested values as compact JSON."""
    import json

    rows = []
    for name, value in (body.get("attributes") or {}).items():
        if value is None or value == {} or value == []:
            continue
        rows.append((name, value if isinstance(value, str) else json.dumps(value, sort_keys=True)))
    return rows
