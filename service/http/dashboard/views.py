"""Dashboard pages: sign-in, the experiment list, one experiment's report, lifecycle actions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Response, abort, flash, g, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from experiments import lifecycle

from service.store import db
from service.http.errors import ApiError
from service.store.models import Experiment
from service.store import experiments as store
from service.http.dashboard import present, queries, report_page, signin
from service.http.dashboard.blueprint import bp
from service.http.dashboard import subjects as _subjects

log = logging.getLogger("nextbest")

PUBLIC_ENDPOINTS = frozenset({"dashboard.login", "dashboard.static"})
# Everything the pages use comes from this site; no script runs at all.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
ACTIONS = {"start": "started", "pause": "paused", "conclude": "concluded"}


@bp.record_once
def _cookie_settings(state: BlueprintSetupState) -> None:
    """The session cookie is for this site's pages only: not readable by scripts, not sent cross-site on POST."""
    config = state.app.config
    config["SESSION_COOKIE_HTTPONLY"] = True
    if not config.get("SESSION_COOKIE_SAMESITE"):
        config["SESSION_COOKIE_SAMESITE"] = "Lax"


@bp.before_request
def _guard() -> Response | None:
    """CSRF on every POST; a valid, unrevoked analyst or admin key behind every page but the sign-in form."""
    if request.method == "POST":
        signin.check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    analyst = signin.current_analyst(db.session())
    if analyst is None:
        if signin.had_session():
            signin.sign_out()
            flash("Your session has ended (the key was revoked or the session expired). Sign in again.", "error")
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for(".login", next=target), 303)
    g.analyst = analyst
    return None


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"  # report numbers are for the signed-in analyst only
    return response


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {"analyst": g.get("analyst"), "csrf_token": signin.csrf_token, "fmt": present,
            "csrf_field": signin.CSRF_FIELD}


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    code = exc.code or 500
    return render_template("dashboard/error.html", code=code, title=exc.name, message=exc.description), code


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[str, int]:
    title = {404: "Not found", 409: "Not possible now", 422: "Invalid input"}.get(exc.status, "Not possible")
    return render_template("dashboard/error.html", code=exc.status, title=title, message=exc.message), exc.status


# ---------------------------------------------------------------------------------------------
# Sign-in


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with an analyst or admin API key; channel keys are refused."""
    database = db.session()
    target = signin.safe_next(request.values.get("next"), url_for(".index"))
    if request.method == "POST":
        try:
            analyst = signin.sign_in(database, request.form.get("key", ""))
        except signin.SignInRefused as refused:
            return render_template("dashboard/login.html", error=refused.message, next=target), refused.status
        flash(f"Signed in as {analyst.name}.", "ok")
        return redirect(target, 303)
    if signin.current_analyst(database) is not None:
        return redirect(target)
    return render_template("dashboard/login.html", error=None, next=target)


@bp.post("/logout")
def logout() -> Response:
    signin.sign_out()
    flash("Signed out.", "ok")
    return redirect(url_for(".login"), 303)


# ---------------------------------------------------------------------------------------------
# Pages


@dataclass(frozen=True, slots=True)
class ListRow:
    key: str
    name: str
    status: str
    allocation: str
    decisions: int
    last_24h: int
    latest: str
    metric: str
    leader: present.Leader | None
    leader_label: str
    srm_warning: bool
    problem: str | None


def _report(database: Session, experiment: Experiment) -> tuple[dict[str, Any] | None, str | None]:
    """The experiment's report as JSON-shaped data (the API's), or why there is none."""
    from reports import build_report, report_to_dict

    from service.store.report_queries import report_input

    try:
        return report_to_dict(build_report(report_input(database, experiment, store.spec_of(experiment)))), None
    except ValueError as exc:
        return None, f"The report cannot be built: {exc}"


def _labels(experiment: Experiment) -> dict[str, str]:
    return report_page.labels_of(experiment.arms)


@bp.get("/")
def index() -> str:
    """Every experiment at a glance: status, traffic, who leads, and whether the split is broken."""
    database = db.session()
    status = request.args.get("status")
    status = status if status in lifecycle.STATUSES else None
    counts = queries.traffic(database)
    rows = []
    for experiment in queries.experiments(database, status):
        seen = counts.get(experiment.id, queries.Traffic(0, 0))
        try:
            report, problem = _report(database, experiment) if seen.decisions else (None, None)
        except Exception:  # one broken report must not hide every other experiment
            log.exception("report of %s failed on the dashboard list", experiment.key)
            database.rollback()
            report, problem = None, "The report failed; the error has been logged."
        leader = present.leader(report) if report else None
        rows.append(ListRow(
            key=experiment.key,
            name=experiment.name,
            status=experiment.status,
            allocation=(experiment.spec.get("allocation") or {}).get("type", "fixed"),
            decisions=seen.decisions,
            last_24h=seen.last_24h,
            latest=present.when(seen.latest) if seen.latest else "–",
            metric=present.metric_label(report["decision_metric"]) if report else "",
            leader=leader,
            leader_label=_labels(experiment).get(leader.arm, leader.arm) if leader else "",
            srm_warning=bool(report and report["srm"]["warning"]),
            problem=problem,
        ))
    return render_template("dashboard/list.html", rows=rows, status=status, statuses=lifecycle.STATUSES)


@bp.get("/experiments/<key>")
def experiment(key: str) -> str:
    """One experiment: warnings first, then the decision metric, charts, the other metrics, history, actions."""
    database = db.session()
    experiment = store.get(database, key)
    spec = store.spec_of(experiment)
    labels = _labels(experiment)
    report, problem = _report(database, experiment)
    page = report_page.prepare(report, labels)
    audit = present.history_rows(list(reversed(store.audit_entries(database, experiment))))
    decision, decision_problem = _promotion_decision(database, experiment)
    return render_template(
        "dashboard/experiment.html",
        experiment=store.to_json(experiment),
        spec=spec,
        labels=labels,
        report=report,
        problem=problem,
        page=page,
        audit=audit,
        actions=lifecycle.allowed_actions(experiment.status),
        decision=decision,
        decision_problem=decision_problem,
        status_label=present.status_label(store.to_json(experiment)),
    )


def _promotion_decision(database: Session, experiment: Experiment) -> tuple[dict[str, Any] | None, str | None]:
    """What `GET .../decision` says, for the checklist; a failure is shown, never a 500."""
    from service.jobs.promotion import decide, decision_json

    if experiment.status != "running":
        return None, None
    try:
        return decision_json(experiment, decide(database, experiment)), None
    except ApiError as exc:
        return None, exc.message
    except Exception:
        log.exception("promotion decision of %s failed on the dashboard", experiment.key)
        database.rollback()
        return None, "The promotion rule could not be evaluated; the error has been logged."


@bp.post("/experiments/<key>/promote")
def promote_action(key: str) -> Response:
    """Promote a winner by hand: the same atomic path, audit record and webhooks as `POST .../promote`."""
    from service.jobs.promotion import promote

    database = db.session()
    experiment = store.get(database, key)
    winner = request.form.get("winner") or ""
    reason = (request.form.get("reason") or "").strip()[:500] or None
    spec = store.spec_of(experiment)
    if winner not in {arm.key for arm in spec.arms}:
        flash(f"Choose an arm to promote ({winner!r} is not one).", "error")
    elif experiment.status != "running" or experiment.winner_arm is not None:
        flash(f"Only a running experiment without a promoted winner can be promoted; it is "
              f"{present.status_label(store.to_json(experiment))}.", "error")
    else:
        holdback = spec.promotion.holdback if spec.promotion else 0.0
        if promote(database, experiment, winner, g.analyst.name, holdback=holdback,
                   reason=reason or "promoted from the dashboard"):
            flash(f"Promoted {winner}.", "ok")
        else:
            flash("The experiment changed meanwhile; nothing was promoted.", "error")
    return redirect(url_for(".experiment", key=key), 303)


@bp.post("/experiments/<key>/rollback")
def rollback_action(key: str) -> Response:
    """Undo a promotion: the same path, audit record and webhooks as `POST .../rollback`."""
    from service.jobs.promotion import rollback

    database = db.session()
    experiment = store.get(database, key)
    reason = (request.form.get("reason") or "").strip()[:500] or "rolled back from the dashboard"
    try:
        done = rollback(database, experiment, g.analyst.name, reason)
    except ApiError as exc:
        database.rollback()
        flash(exc.message, "error")
    else:
        flash("Rolled back to the configured allocation." if done else
              "The experiment changed meanwhile; nothing was rolled back.", "ok" if done else "error")
    return redirect(url_for(".experiment", key=key), 303)


@bp.post("/experiments/<key>/lifecycle")
def lifecycle_action(key: str) -> Response:
    """Start, pause or conclude through the same store call and audit log as the API, as the signed-in key."""
    action = request.form.get("action", "")
    if action not in ACTIONS:
        abort(400, description=f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    winner = (request.form.get("winner") or None) if action == "conclude" else None
    reason = (request.form.get("reason") or "").strip()[:500] or None
    database = db.session()
    experiment = store.get(database, key, for_update=True)
    try:
        store.apply_action(database, experiment, action, g.analyst.name, winner=winner, reason=reason)
    except ApiError as exc:
        database.rollback()
        flash(exc.message, "error")
    else:
        database.commit()
        done = f"Experiment {ACTIONS[action]}"
        flash(f"{done} with winner {winner}." if winner else f"{done}.", "ok")
    return redirect(url_for(".experiment", key=key), 303)


@bp.get("/experiments/<key>/evaluate")
def evaluate(key: str) -> str:
    """Off-policy evaluation table: fixed arms, uniform, Thompson sampling and the experiment's own policy."""
    from experiments.spec import BanditAllocation

    from service.http.api.evaluation import evaluate_experiment
    from service.http.schemas import EvaluateRequest

    database = db.session()
    experiment = store.get(database, key)
    spec = store.spec_of(experiment)
    candidates: list[dict[str, Any]] = [{"name": f"always {arm.key}", "policy": {"name": "fixed", "arm": arm.key}}
                                        for arm in spec.arms]
    candidates.append({"name": "uniform random", "policy": {"name": "uniform"}})
    if spec.reward.type == "event" and spec.reward.value is None:
        candidates.append({"name": "Thompson sampling", "policy": {"name": "thompson_sampling"}})
    if isinstance(spec.allocation, BanditAllocation) and spec.allocation.policy.name != "thompson_sampling":
        candidates.append({"name": f"this experiment's {spec.allocation.policy.name}",
                           "policy": spec.allocation.policy.model_dump(mode="json", exclude_none=True)})
    result, problem = None, None
    try:
        result = evaluate_experiment(database, key, EvaluateRequest(candidates=candidates[:20]))
    except ApiError as exc:
        problem = exc.message

    def fmt_value(estimate: dict[str, Any] | None) -> str:
        return "–" if not estimate or estimate.get("value") is None else f"{estimate['value']:.4f}"

    return render_template("dashboard/evaluate.html", experiment=store.to_json(experiment), result=result,
                           problem=problem, fmt_value=fmt_value)
