"""Hostile and degenerate input, one case per class the red-team pass found (and a few more):
every answer is a declared client error (or a success), in the one error shape, never a 5xx.

Classes: NUL and unpaired surrogates in paths, query values, JSON bodies, events and every
importer; timestamps at the edges of the calendar; CSV with a bare CR, a field over 128 KiB or a
NUL; JSON numbers that overflow to infinity; weights that would overflow their sum; bodies over
their route's limit; form-encoded bodies; non-boolean consent; contradicting event fields; long
request ids. Each answer's status must also be declared on its operation in /openapi.json.
Runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL (one shared database per backend).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from service.app import openapi_document
from tests.conftest import Api, spring_email
from tests.reliability.test_limits import shared  # noqa: F401 - the fixture

EXPERIMENT = "spring-email"  # created and running in `shared`
NOW = "2026-01-01T00:00:00Z"


def _json(text: str) -> dict[str, Any]:
    return {"data": text, "content_type": "application/json"}


def _csv(text: str) -> dict[str, Any]:
    return {"data": text, "content_type": "text/csv"}


def _event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "h-e", "type": "open", "experiment": EXPERIMENT, "subject_id": "h-s", "occurred_at": NOW,
            **fields}


def _events(*events: dict[str, Any]) -> dict[str, Any]:
    return _json(json.dumps({"events": list(events)}))


def _spec_with(old: str, new: str, **overrides: Any) -> dict[str, Any]:
    text = json.dumps(spring_email(contact_policy=None, **overrides))
    assert old in text
    return _json(text.replace(old, new))


# (label, scope, method, path, request kwargs, statuses allowed)
CASES: list[tuple[str, str, str, str, dict[str, Any], set[int]]] = [
    # NUL and unpaired surrogates
    ("NUL in an experiment key path", "analyst", "GET", "/v1/experiments/spr%00ing/report", {}, {422}),
    ("NUL in a subject path", "analyst", "GET", "/v1/subjects/a%00b", {}, {422}),
    ("NUL in a subject path (PUT)", "channel", "PUT", "/v1/subjects/a%00b", {"json": {"loyalty_tier": "x"}}, {422}),
    ("NUL in a query value", "analyst", "GET", f"/v1/experiments/{EXPERIMENT}/report/segments?by=attributes.a%00",
     {}, {422}),
    ("surrogate in a subject_id", "channel", "POST", "/v1/assign",
     _json('{"experiment": "spring-email", "subject_id": "\\udc00"}'), {422}),
    ("surrogate in a context value", "channel", "POST", "/v1/assign",
     _json('{"experiment": "spring-email", "subject_id": "h-1", "context": {"a": "\\ud800"}}'), {422}),
    ("surrogate in a batch subject", "channel", "POST", "/v1/assign/batch",
     _json('{"experiment": "spring-email", "subjects": [{"subject_id": "\\ud800"}]}'), {422}),
    ("surrogate in a profile attribute", "channel", "PUT", "/v1/subjects/h-2",
     _json('{"attributes": {"tier": "\\ud800x"}}'), {422}),
    ("surrogate in a profile attribute name", "channel", "PUT", "/v1/subjects/h-2",
     _json('{"attributes": {"\\udfff": "x"}}'), {422}),
    ("NUL in an arm payload", "analyst", "POST", "/v1/experiments",
     _spec_with('"mens-v1"', '"mens\\u0000"', key="h-nul"), {422}),
    ("surrogate in an experiment name", "analyst", "POST", "/v1/experiments",
     _spec_with('"Spring e-mail offer"', '"\\ud800"', key="h-sur"), {422}),
    ("surrogate in a webhook url", "admin", "POST", "/v1/webhooks", _json('{"url": "http://x/\\ud800"}'), {422}),
    # timestamps at the calendar's edges
    ("year 1 with a positive offset", "channel", "POST", "/v1/events",
     _events(_event(event_id="h-t1", occurred_at="0001-01-01T00:00:00+05:00")), {200}),
    ("year 9999 with a negative offset", "channel", "POST", "/v1/events",
     _events(_event(event_id="h-t2", occurred_at="9999-12-31T23:00:00-05:00")), {200}),
    ("decided_at at the calendar's edge (import)", "analyst", "POST", f"/v1/experiments/{EXPERIMENT}/import",
     _csv("subject_id,arm,decided_at\nh-i1,mens,0001-01-01T00:00:00+05:00\n"), {200}),
    ("purchase at the calendar's edge", "analyst", "POST", "/v1/transactions/import",
     _csv("subject_id,amount,occurred_at\nh-p,5,0001-01-01T00:00:00+05:00\n"), {200}),
    # CSV quirks, all three importers
    ("history CSV with bare CR", "analyst", "POST", f"/v1/experiments/{EXPERIMENT}/import",
     _csv("subject_id,arm,click\rh-c1,mens,1\r"), {200}),
    ("history CSV field over 128 KiB", "analyst", "POST", f"/v1/experiments/{EXPERIMENT}/import",
     _csv("subject_id,arm,click\nh-c2,mens," + "1" * 140_000 + "\n"), {422}),
    ("history NDJSON with a surrogate", "analyst", "POST", f"/v1/experiments/{EXPERIMENT}/import",
     {"data": '{"subject_id": "\\ud800", "arm": "mens"}\n', "content_type": "application/x-ndjson"}, {200}),
    ("history NDJSON number out of range", "analyst", "POST", f"/v1/experiments/{EXPERIMENT}/import",
     {"data": '{"subject_id": "h-n", "arm": "mens", "revenue": 1e400}\n', "content_type": "application/x-ndjson"},
     {200}),
    ("subject CSV with bare CR", "channel", "POST", "/v1/subjects/import",
     _csv("subject_id,loyalty_tier\rh-q,gold\r"), {200}),
    ("subject CSV with NUL", "channel", "POST", "/v1/subjects/import", _csv("subject_id,loyalty_tier\nq\x00,gold\n"),
     {200}),
    ("subject CSV field over 128 KiB", "channel", "POST", "/v1/subjects/import",
     _csv("subject_id,loyalty_tier\nh-q," + "g" * 140_000 + "\n"), {422}),
    ("purchase CSV with bare CR", "analyst", "POST", "/v1/transactions/import",
     _csv("subject_id,amount,occurred_at\rh-q,5,2026-01-01\r"), {200}),
    ("purchase CSV field over 128 KiB", "analyst", "POST", "/v1/transactions/import",
     _csv("subject_id,amount,occurred_at\nh-q,5," + "2" * 140_000 + "\n"), {422}),
    # numbers that overflow to infinity, and bounds
    ("1e400 in an attribute", "channel", "PUT", "/v1/subjects/h-3", _json('{"attributes": {"x": 1e400}}'), {400}),
    ("huge integer in an attribute", "channel", "PUT", "/v1/subjects/h-3",
     _json('{"attributes": {"x": ' + "9" * 400 + "}}"), {400}),
    ("1e400 in an arm payload", "analyst", "POST", "/v1/experiments",
     _spec_with('"mens-v1"', "1e400", key="h-p1"), {400}),
    ("1e400 as reward.default", "analyst", "POST", "/v1/experiments",
     _spec_with('"default": 1.0', '"default": 1e400', key="h-p2", reward={"event": "conversion", "default": 1.0}),
     {400}),
    ("1e300 as reward.default", "analyst", "POST", "/v1/experiments",
     _spec_with('"default": 1.0', '"default": 1e300', key="h-p3", reward={"event": "conversion", "default": 1.0}),
     {422}),
    ("1e400 as default_subject_value", "analyst", "POST", "/v1/experiments",
     _spec_with('"default_subject_value": 1.0', '"default_subject_value": 1e400', key="h-p4",
                default_subject_value=1.0), {400}),
    ("1e308 weights", "analyst", "POST", "/v1/experiments",
     {"json": spring_email(key="h-w", contact_policy=None, allocation={
         "type": "fixed", "weights": {"control": 1e308, "mens": 1e308, "womens": 1e308}})}, {422}),
    ("1e400 in /v1/power", "analyst", "POST", "/v1/power", _json('{"baseline": 1e400, "mde_relative": 0.1}'), {400}),
    ("1e300 effect in /v1/power", "analyst", "POST", "/v1/power",
     _json('{"baseline": 0.1, "mde_relative": 1e300}'), {422}),
    ("1e-300 effect in /v1/power", "analyst", "POST", "/v1/power",
     _json('{"baseline": 0.1, "mde_relative": 1e-300}'), {200, 422}),
    ("1e400 as an event value", "channel", "POST", "/v1/events",
     _json('{"events": [{"event_id": "h-v", "type": "conversion", "experiment": "spring-email", '
           '"subject_id": "h-s", "value": 1e400, "occurred_at": "2026-01-01T00:00:00Z"}]}'), {400}),
    # limits and content types
    ("20 MB experiment spec", "analyst", "POST", "/v1/experiments",
     _json(json.dumps(spring_email(key="h-huge", description="x" * 20_000_000))), {413}),
    ("100 KB single decision", "channel", "POST", "/v1/assign",
     _json(json.dumps({"experiment": EXPERIMENT, "subject_id": "h-big", "context": {"x": "y" * 100_000}})), {413}),
    ("form-encoded body", "analyst", "POST", "/v1/experiments", {"data": {"key": "x"}}, {415}),
    ("text body to a JSON route", "channel", "POST", "/v1/assign", {"data": "hello", "content_type": "text/plain"},
     {415}),
    ("non-boolean consent", "channel", "PUT", "/v1/subjects/h-4", {"json": {"consent": {"email": "yes"}}}, {422}),
    ("integer consent", "channel", "PUT", "/v1/subjects/h-4", {"json": {"consent": {"email": 1}}}, {422}),
]


def _declared(method: str, path: str) -> set[str]:
    from flask import current_app

    document = openapi_document(current_app)  # type: ignore[arg-type]
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path.split("?", 1)[0]) and method.lower() in item:
            return set(item[method.lower()]["responses"])
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


@pytest.mark.parametrize(("label", "scope", "method", "path", "kwargs", "allowed"), CASES,
                         ids=[case[0] for case in CASES])
def test_hostile_input_gets_a_declared_client_answer(shared: tuple[Any, Api], label: str, scope: str, method: str,
                                                     path: str, kwargs: dict[str, Any], allowed: set[int]) -> None:
    app, api = shared
    response = api.call(method, path, scope=scope, **kwargs)
    status = response.status_code
    assert status in allowed, (label, status, response.get_data(as_text=True)[:300])
    with app.app_context():
        assert str(status) in _declared(method, path), (label, status)
    if status >= 400:
        error = response.get_json()["error"]
        assert set(error) == {"code", "message", "details"}, error
    if path == "/v1/events" and status == 200:  # refused one by one, with the reason
        results = response.get_json()["results"]
        assert results and all(r["status"] == "rejected" and r["reason"] for r in results), results
    if "import" in path and status == 200:
        body = response.get_json()
        assert body.get("rejected") or body.get("stored", body.get("imported", 0)) > 0, body


def test_one_bad_event_does_not_fail_its_batch(shared: tuple[Any, Api]) -> None:
    _, api = shared
    good = [_event(event_id=f"h-ok-{i}", subject_id=f"h-ok-{i}") for i in range(50)]
    bad = [_event(event_id="h-bad-1", subject_id="\udfff"), _event(event_id="\ud800"),
           _event(event_id="h-bad-3", occurred_at="0001-01-01T00:00:00+05:00"),
           _event(event_id="h-bad-4", type="a\x00b")]
    response = api.call("POST", "/v1/events", scope="channel", **_events(*good[:25], *bad, *good[25:]))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (50, 4), body
    reasons = [r["reason"] for r in body["results"] if r["status"] == "rejected"]
    assert "subject_id is not valid Unicode" in reasons[0] and "event_id is not valid Unicode" in reasons[1]
    assert "occurred_at must lie between" in reasons[2] and "NUL" in reasons[3]


def test_an_event_contradicting_its_assignment_is_rejected(shared: tuple[Any, Api]) -> None:
    _, api = shared
    spec = spring_email(key="h-other", contact_policy=None)
    api.create_experiment(spec, start=True)
    decision = api.assign(EXPERIMENT, "h-owner")
    assert decision["assignment_id"]
    cases = [
        _event(event_id="h-x1", assignment_id=decision["assignment_id"], experiment="h-other", subject_id="h-owner"),
        _event(event_id="h-x2", assignment_id=decision["assignment_id"], subject_id="someone-else"),
        _event(event_id="h-x3", assignment_id=decision["assignment_id"], subject_id="h-owner"),
    ]
    results = api.send_events(cases)["results"]
    assert results[0]["status"] == "rejected" and "contradicts assignment_id" in results[0]["reason"]
    assert "belongs to experiment 'spring-email'" in results[0]["reason"]
    assert results[1]["status"] == "rejected" and "subject_id contradicts" in results[1]["reason"]
    assert results[2]["status"] == "accepted"


def test_a_stored_value_cannot_break_segments_for_everyone(shared: tuple[Any, Api]) -> None:
    """The surrogate that used to be stored (and then broke every attributes.* segment report) is refused,
    and segment reports keep working."""
    _, api = shared
    refused = api.call("PUT", "/v1/subjects/h-seg", scope="channel", **_json('{"attributes": {"tier": "\\ud800"}}'))
    assert refused.status_code == 422 and refused.get_json()["error"]["details"][0]["field"] == "attributes.tier"
    assert api.call("PUT", "/v1/subjects/h-seg", scope="channel", json={"attributes": {"tier": "gold"}}).status_code \
        == 200
    api.assign(EXPERIMENT, "h-seg")
    segments = api.call("GET", f"/v1/experiments/{EXPERIMENT}/report/segments?by=attributes.tier")
    assert segments.status_code == 200, segments.get_json()


def test_request_ids_are_bounded(shared: tuple[Any, Api]) -> None:
    _, api = shared
    kept = api.call("GET", "/healthz", headers={"X-Request-Id": "abc-123_x.y"})
    assert kept.headers["X-Request-Id"] == "abc-123_x.y"
    for hostile in ("a" * 10_000, "bad id with spaces", "<script>"):
        response = api.call("GET", "/healthz", headers={"X-Request-Id": hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"]), response.headers["X-Request-Id"]


def test_subject_ids_stay_out_of_access_logs(shared: tuple[Any, Api], caplog: pytest.LogCaptureFixture) -> None:
    _, api = shared
    with caplog.at_level("INFO", logger="nextbest.access"):
        api.call("GET", "/v1/subjects/alice@example.com", scope="analyst")
        api.call("GET", "/v1/subjects/alice@example.com/export", scope="admin")
    paths = [getattr(r, "path", "") for r in caplog.records if r.name == "nextbest.access"]
    assert len(paths) == 2 and not any("alice" in p for p in paths), paths
    assert paths[0].startswith("/v1/subjects/subject:") and paths[1].endswith("/export")
    assert paths[0] == paths[1].removesuffix("/export")  # the same pseudonym for the same subject


def test_sql_parameters_are_hidden_from_database_errors(shared: tuple[Any, Api]) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from service.store import db as db_module

    app, _ = shared
    with db_module.get_db(app).session() as session:
        with pytest.raises(DBAPIError) as raised:
            session.execute(text("SELECT no_such_column FROM experiments WHERE key = :k"), {"k": "secret-subject"})
    assert "secret-subject" not in str(raised.value)


def test_session_cookie_is_secure_over_tls_or_by_setting(shared: tuple[Any, Api]) -> None:
    app, api = shared
    plain = app.test_client().get("/dashboard/login")
    assert "Secure" not in plain.headers.get("Set-Cookie", "")
    tls = app.test_client().get("/dashboard/login", base_url="https://localhost")
    assert "; Secure" in tls.headers["Set-Cookie"]
    app.config["NEXTBEST_SECURE_COOKIES"] = "on"
    try:
        forced = app.test_client().get("/dashboard/login")
        assert "; Secure" in forced.headers["Set-Cookie"]
    finally:
        app.config["NEXTBEST_SECURE_COOKIES"] = "auto"
