"""Reports: A/B statistics as JSON, CSV or HTML, and sample-size planning."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, render_template
from flask_openapi3 import APIBlueprint, Tag
from pydantic import TypeAdapter

from service.store import db
from service.http.auth import BEARER
from service.http.errors import ApiError
from service.store.report_queries import report_input
from service.http.schemas import ExperimentPath, PowerOut, PowerRequest, ReportOut, ReportQuery, SegmentQuery, SegmentReports
from service.store import experiments as store
from service.http.api.scoping import requires

api = APIBlueprint("reports", __name__, url_prefix="/v1", abp_tags=[Tag(name="reports")], abp_security=BEARER)


def _report_schema() -> Any:
    from reports import Report

    return TypeAdapter(Report).json_schema(ref_template="#/components/schemas/{model}")


def build_experiment_report(key: str) -> Any:
    from reports import build_report

    session = db.session()
    experiment = store.get(session, key)
    return experiment, build_report(report_input(session, experiment, store.spec_of(experiment)))


@api.get("/experiments/<key>/report", responses={200: ReportOut})
@requires("reports", "analyst")
def experiment_report(path: ExperimentPath, query: ReportQuery) -> Response:
    """The A/B report: per-arm rates and means with intervals, lifts, SRM, sequential, CUPED, bandit estimates."""
    from reports import report_to_csv, report_to_dict

    experiment, report = build_experiment_report(path.key)
    if query.format == "csv":
        return Response(report_to_csv(report), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{experiment.key}-report.csv"'})
    body = report_to_dict(report)
    if query.format == "html":
        return Response(_html_report(experiment, body), mimetype="text/html")
    return jsonify(body)


def _html_report(experiment: Any, body: dict[str, Any]) -> str:
    """The report as one self-contained page with the dashboard's sections, charts and words."""
    from service.http.dashboard import present, report_page

    labels = report_page.labels_of(experiment.arms)
    shown = store.to_json(experiment)
    return render_template("report.html", experiment=shown, report=body, labels=labels, problem=None,
                           page=report_page.prepare(body, labels), export=True, fmt=present,
                           status_label=present.status_label(shown), stylesheet=report_page.stylesheet())


@api.get("/experiments/<key>/report/segments", responses={200: SegmentReports})
@requires("reports", "analyst")
def segment_reports(path: ExperimentPath, query: SegmentQuery) -> Response:
    """The same report per value of a profile attribute (e.g. loyalty tier); subjects without one are "null"."""
    from reports import build_report, report_to_dict

    from service.store.report_queries import segment_report_input, segment_values

    session = db.session()
    experiment = store.get(session, path.key)
    spec = store.spec_of(experiment)
    try:
        values = segment_values(session, experiment, query.by)
    except ValueError as exc:
        raise ApiError(422, str(exc), details=[{"field": "by"}]) from None
    segments = [
        {"value": value, "report": report_to_dict(build_report(
            segment_report_input(session, experiment, spec, query.by, value)))}
        for value in values
    ]
    return jsonify(experiment=experiment.key, by=query.by, segments=segments)


@api.post("/power", responses={200: PowerOut})
@requires("reports", "analyst")
def power(body: PowerRequest) -> Response:
    """Sample size per arm, minimum detectable effect, or duration: fixed-horizon and for promotion's always-valid rule."""
    from dataclasses import asdict

    from reports.power import plan_mean, plan_rate

    common: dict[str, Any] = dict(
        mde_relative=body.mde_relative, sample_size_per_arm=body.sample_size_per_arm, alpha=body.alpha,
        power=body.power, arms=body.arms, daily_traffic=body.daily_traffic, alternative=body.alternative,
        correction=body.correction, sequential_tuning_n=body.sequential_tuning_n,
    )
    try:
        if body.metric_type == "rate":
            result = plan_rate(body.baseline, **common)
        else:
            if body.std_dev is None:
                raise ApiError(422, "std_dev is required for means", details=[{"field": "std_dev"}])
            result = plan_mean(body.baseline, body.std_dev, **common)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return jsonify(asdict(result))
