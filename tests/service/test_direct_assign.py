"""The direct path for POST /v1/assign answers exactly as the Flask route does, or lets Flask answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from service import create_app
from service.store import db as db_module
from service.http.direct_assign import DirectAssign
from tests.conftest import Api, spring_email


@pytest.fixture
def flask_only(app: Any, database_url: str) -> Iterator[Any]:
    """A second app on the same database with the direct path off: every request through Flask."""
    other = create_app({"DATABASE_URL": database_url, "TESTING": True, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0,
                        "NEXTBEST_DIRECT_ASSIGN": "off"})
    assert not isinstance(other.wsgi_app, DirectAssign)
    yield other
    db_module.get_db(other).dispose()


@pytest.fixture
def reached_flask(app: Any) -> list[str]:
    """Paths of the decision requests (/v1/assign...) the direct path handed to Flask."""
    direct = app.wsgi_app
    assert isinstance(direct, DirectAssign)
    handed: list[str] = []
    inner = direct.flask_wsgi

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"].startswith("/v1/assign"):
            handed.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    direct.flask_wsgi = counting
    return handed


def both(api: Any, flask_only: Any) -> tuple[Api, Api]:
    return api, Api(flask_only.test_client(), api.keys)


def comparable(response: Any, drawn: bool = False) -> tuple[int, dict[str, str], Any]:
    """Status, headers and body, less what differs by design: the new id, and the arm when it is drawn."""
    body = response.get_json()
    if isinstance(body, dict) and body.get("assignment_id"):
        body = {**body, "assignment_id": "<id>"}
        if drawn:
            body = {**body, "arm": "<drawn>", "payload": "<drawn>", "propensity": "<drawn>"}
    headers = {k: v for k, v in response.headers.items() if k not in ("X-Request-Id", "Content-Length")}
    return response.status_code, headers, body


def test_a_decision_is_answered_directly_and_as_flask_would(app: Any, api: Any, flask_only: Any,
                                                            reached_flask: list[str]) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    direct, flask = both(api, flask_only)
    body = {"experiment": "spring-email", "subject_id": "c-1", "channel": "email"}
    ours = direct.call("POST", "/v1/assign", scope="channel", json=body, headers={"X-Request-Id": "req-7"})
    theirs = flask.call("POST", "/v1/assign", scope="channel", json=body)
    assert reached_flask == [], "a valid decision never reaches Flask"
    assert comparable(ours) == comparable(theirs)
    assert ours.get_data() == ours.get_data(as_text=True).encode() and ours.get_data().endswith(b"\n")
    assert ours.headers["X-Request-Id"] == "req-7" and ours.headers["X-Content-Type-Options"] == "nosniff"
    assert int(ours.headers["Content-Length"]) == len(ours.get_data())
    assert ours.get_json()["assignment_id"] != theirs.get_json()["assignment_id"]
    from tests.service.test_decisions_api import stored

    for answer in (ours, theirs):
        row = stored(app, answer.get_json()["assignment_id"])
        assert row is not None and row.subject_id == "c-1" and row.arm_key == answer.get_json()["arm"]


@pytest.mark.parametrize("case", ["bandit", "contact_policy", "unsubscribed", "draft", "concluded", "profile"])
def test_every_kind_of_answer_matches_flask(app: Any, api: Any, flask_only: Any, reached_flask: list[str],
                                            case: str) -> None:
    direct, flask = both(api, flask_only)
    context: dict[str, Any] | None = None
    if case == "bandit":
        spec = spring_email(contact_policy=None, allocation={
            "type": "bandit", "policy": {"name": "epsilon_greedy", "epsilon": 0.0},
            "features": [{"name": "age", "type": "numeric"}]})
        context = {"age": 41}
    elif case == "contact_policy":
        spec = spring_email(contact_policy={"max_per_subject": {"count": 2, "per_seconds": 86400}})
    elif case == "profile":
        spec = spring_email(contact_policy=None, allocation={
            "type": "bandit", "policy": {"name": "lin_ucb", "alpha": 1.0},
            "features": [{"name": "age", "type": "numeric", "source": "profile"}]})
        assert api.call("PUT", "/v1/subjects/c-1", scope="channel", json={"attributes": {"age": 33}}).status_code in (
            200, 201)
    else:
        spec = spring_email(contact_policy=None)
    api.create_experiment(spec, start=case != "draft")
    if case == "unsubscribed":
        first = api.assign("spring-email", "c-1")
        api.send_events([{"event_id": "bye", "type": "unsubscribe", "assignment_id": first["assignment_id"],
                          "occurred_at": datetime.now(timezone.utc).isoformat()}])
    if case == "concluded":
        assert api.call("POST", "/v1/experiments/spring-email/conclude", json={"winner": "mens"}).status_code == 200
    body: dict[str, Any] = {"experiment": "spring-email", "subject_id": "c-1", "channel": "email"}
    if context is not None:
        body["context"] = context
    answers = []
    for client in (direct, flask, direct, flask):  # the second pair meets the first pair's history
        answer = client.call("POST", "/v1/assign", scope="channel", json=body)
        answers.append(comparable(answer, drawn=case in ("bandit", "profile")))
    assert answers[0] == answers[1] and answers[2] == answers[3], answers
    assert answers[0][0] == 200
    assert reached_flask == []
    if case == "contact_policy":
        assert answers[2][2]["no_offer"] is True and answers[2][2]["reason"] == "frequency_cap"
    if case == "unsubscribed":
        assert answers[0][2]["no_offer"] is True and answers[0][2]["reason"] == "unsubscribed"


BAD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("no key", {"json": {"experiment": "spring-email", "subject_id": "c-1"}, "headers": {}}),
    ("analyst key", {"json": {"experiment": "spring-email", "subject_id": "c-1"}, "scope": "analyst"}),
    ("unknown key", {"json": {"experiment": "spring-email", "subject_id": "c-1"},
                     "headers": {"Authorization": "Bearer nb_nope_nope"}}),
    ("malformed JSON", {"data": b'{"experiment": ', "content_type": "application/json"}),
    ("a list", {"json": [1, 2]}),
    ("missing subject", {"json": {"experiment": "spring-email"}}),
    ("unknown field", {"json": {"experiment": "spring-email", "subject_id": "c-1", "colour": "red"}}),
    ("unknown experiment", {"json": {"experiment": "autumn-email", "subject_id": "c-1"}}),
    ("context the experiment does not declare", {"json": {"experiment": "spring-email", "subject_id": "c-1",
                                                          "context": {"age": "old"}}}),
    ("NUL in the subject", {"json": {"experiment": "spring-email", "subject_id": "c\x00-1"}}),
    ("nested too deep", {"json": {"experiment": "spring-email", "subject_id": "c-1",
                                  "context": {"a": json.loads("[" * 40 + "]" * 40)}}}),
    ("not JSON", {"data": b"experiment=spring-email", "content_type": "application/x-www-form-urlencoded"}),
    ("NaN", {"data": b'{"experiment": "spring-email", "subject_id": "c-1", "context": {"age": NaN}}',
             "content_type": "application/json"}),
]


@pytest.mark.parametrize("name,request_args", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_every_refusal_is_flasks(api: Any, flask_only: Any, reached_flask: list[str], name: str,
                                 request_args: dict[str, Any]) -> None:
    api.create_experiment(spring_email(contact_policy=None, allocation={
        "type": "bandit", "policy": {"name": "thompson_sampling"},
        "features": [{"name": "age", "type": "numeric", "required": False}]}), start=True)
    answers = []
    for app_client in (api.client, flask_only.test_client()):
        args = dict(request_args)
        scope = args.pop("scope", "channel")
        headers = args.pop("headers", {"Authorization": f"Bearer {api.keys[scope]}"})
        answers.append(app_client.post("/v1/assign", headers=headers, **args))
    assert answers[0].status_code >= 400, name
    assert comparable(answers[0]) == comparable(answers[1])
    assert set(answers[0].get_json()) == {"error"}
    assert reached_flask == ["/v1/assign"], "the refusal came from Flask"


def test_other_endpoints_and_methods_go_to_flask(api: Any, reached_flask: list[str]) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    assert api.client.get("/v1/assign", headers=api.headers("channel")).status_code == 405
    api.assign_batch("spring-email", [{"subject_id": "c-1"}])
    assert reached_flask == ["/v1/assign", "/v1/assign/batch"]


def test_a_failed_write_is_answered_in_the_error_shape_and_counted(app: Any, api: Any, reached_flask: list[str],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from service.usecases import decisions as core

    api.create_experiment(spring_email(contact_policy=None), start=True)
    lost = OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    def fail(database: Any, outcome: Any, *args: Any) -> Any:
        raise lost

    monkeypatch.setattr(core, "store_one", fail)
    answer = api.call("POST", "/v1/assign", scope="channel", headers={"X-Request-Id": "req-9"},
                      json={"experiment": "spring-email", "subject_id": "c-1"})
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "database_unavailable"
    assert answer.headers["Retry-After"] == "5" and answer.headers["X-Request-Id"] == "req-9"
    assert reached_flask == [], "the write is never run a second time by Flask"

    def crash(database: Any, outcome: Any, *args: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(core, "store_one", crash)
    logger = logging.getLogger("nextbest")
    logger.addHandler(caplog.handler)
    caplog.clear()
    try:
        with caplog.at_level(logging.INFO, logger="nextbest"):
            crashed = api.call("POST", "/v1/assign", scope="channel",
                               json={"experiment": "spring-email", "subject_id": "c-2"})
    finally:
        logger.removeHandler(caplog.handler)
    assert crashed.status_code == 500 and crashed.get_json()["error"]["code"] == "internal_error"
    failure = next(r for r in caplog.records if r.getMessage() == "unexpected error")
    assert failure.exc_info is not None and failure.exc_info[1].args == ("disk full",)
    access = [r for r in caplog.records if r.name == "nextbest.access"]
    assert [(r.status, r.endpoint) for r in access] == [(500, "decisions.assign")]  # type: ignore[attr-defined]
    metrics = api.call("GET", "/metrics", scope="admin").get_data(as_text=True)
    for status in ("503", "500"):
        assert f'nextbest_requests_total{{endpoint="decisions.assign",method="POST",status="{status}"}}' in metrics


def test_a_database_behind_the_code_is_refused_by_flask(app: Any, api: Any, reached_flask: list[str]) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    app.extensions["nextbest.migrated"] = False
    app.extensions["nextbest.head"] = "a-revision-this-database-lacks"
    answer = api.call("POST", "/v1/assign", scope="channel", json={"experiment": "spring-email", "subject_id": "c-1"})
    assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "database_not_migrated"
    assert reached_flask == ["/v1/assign"]
