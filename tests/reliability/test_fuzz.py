"""API fuzzing: schemathesis against the service's own /openapi.json, through the WSGI app, on SQLite.

Every documented operation runs once per key scope (channel, analyst, admin): a valid key
of that scope goes on every generated request through an auth provider, so the fuzzer
reaches both the scope check and, with the right scope, the handlers behind it. Each
response must:

- not be a server error (`not_a_server_error`);
- match the documented response schema (`response_schema_conformance`);
- have a status its operation declares in the document (every error status each route can
  answer is declared), one of the error statuses DESIGN.md promises, and every error must have
  the one error shape (`status_and_error_contract`, below).

Each test gets a copy of one seeded database: a running `spring-email` (the DESIGN.md
example) with imported and live decisions and outcomes, a running bandit, and a webhook.
Explicit examples (run first) reach each handler's main path with those real names, and the
generated cases use them half of the time (path parameters, the `experiment` of a body), so
handlers past the 404 run too. Generation is deterministic (fixed seed, derandomized) and
bounded: at most 20 generated examples per operation and scope, no deadline.

A stateful phase follows the document's links (a created experiment's key to its routes, a
decision's assignment_id and subject_id to theirs, a webhook's id to its deletion) through 30
scenarios of up to 10 calls each, with the admin key, under the same checks.

A case that fails because of a known service bug is marked in KNOWN_BUGS with a strict
xfail, so it turns red when the bug is fixed.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import response_schema_conformance

from service import create_app
from service.store import db as db_module
from service.http.auth import hash_secret
from service.clock import utcnow
from service.store.models import ApiKey
from tests.conftest import spring_email

SCOPES = ("channel", "analyst", "admin")
SEED = 20261124
MAX_EXAMPLES = 20
# The error statuses DESIGN.md lists ("Errors always have one shape, with the right status").
CONTRACT_ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 503})

# Known service bugs, each found by this test: (scope, "METHOD /path") -> reason. The mark is a
# strict xfail, so the case fails loudly once the bug is fixed and the entry must go.
KNOWN_BUGS: dict[tuple[str, str], str] = {}

# Keys are made here, so the auth provider knows them when schemathesis builds its cases
# (at collection); each test database stores only their hashes, as `nextbest keys create` does.
KEYS = {scope: f"nb_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}" for scope in SCOPES}

# Real names that exist in the seeded database, swapped into path parameters half of the time.
KNOWN_PATH_VALUES: dict[str, Any] = {"key": "spring-email", "subject_id": "c-1", "webhook_id": 1}
KNOWN_EXPERIMENTS = ("spring-email", "spring-bandit")

# Explicit examples that reach each handler's main path with the seeded data (schemathesis
# runs them first, before the generated cases); path parameters come from KNOWN_PATH_VALUES.
_NOW = utcnow().isoformat()
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "POST /v1/assign": [{"body": {"experiment": "spring-email", "subject_id": "c-100", "channel": "email",
                                  "context": {"timezone": "Etc/GMT"}}}],
    "POST /v1/assign/batch": [{"body": {"experiment": "spring-bandit", "channel": "email",
                                        "subjects": [{"subject_id": "c-1"}, {"subject_id": "c-2"}]}}],
    "POST /v1/events": [{"body": {"events": [
        {"event_id": "example-1", "type": "open", "experiment": "spring-email", "subject_id": "c-1",
         "occurred_at": _NOW},
        {"event_id": "example-2", "type": "unsubscribe", "subject_id": "c-2", "channel": "email",
         "occurred_at": _NOW}]}}],
    "POST /v1/experiments": [{"body": spring_email(key="autumn-email")}],
    "PATCH /v1/experiments/{key}": [{"body": {"description": "spring offers, second wave"}}],
    "POST /v1/experiments/{key}/conclude": [{"body": {"winner": "mens", "reason": "clear winner"}}],
    "POST /v1/experiments/{key}/evaluate": [{"body": {"candidates": [
        {"name": "always-mens", "policy": {"name": "fixed", "arm": "mens"}},
        {"name": "ts", "policy": {"name": "thompson_sampling"}}]}}],
    "POST /v1/experiments/{key}/import": [{"body": "subject_id,arm,click\nx-1,mens,1\nx-2,womens,0\n",
                                           "media_type": "text/csv"}],
    "POST /v1/experiments/{key}/promote": [{"body": {"winner": "mens"}}],
    "GET /v1/experiments/{key}/report": [{}, {"query": {"format": "csv"}}, {"query": {"format": "html"}}],
    "POST /v1/power": [{"body": {"baseline": 0.1, "mde_relative": 0.1}}],
    "POST /v1/subjects/{subject_id}/resubscribe": [{"body": {"channel": "email"}}],
    "POST /v1/webhooks": [{"body": {"url": "http://127.0.0.1:9/promotions", "experiment": "spring-email"}}],
}

APP_SETTINGS = {
    "TESTING": True,
    "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0,
    "NEXTBEST_JOBS": "off",
    "NEXTBEST_ACCESS_LOG": "off",
    "NEXTBEST_RATE_LIMIT_PER_SECOND": 0,  # deterministic runs: no 429 from a fast in-process client
}

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                   "with-security-parameters": False},  # every request carries the scope's key
    "phases": {"stateful": {"enabled": False}},
})

# The import endpoint documents text/csv and application/x-ndjson bodies as strings: send them as text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

# The document comes from the service itself; this instance only serves it (no database is touched).
_DOCUMENT_APP = create_app({"DATABASE_URL": "sqlite://", **APP_SETTINGS})


def _schema_for(scope: str, config: Any = CONFIG) -> Any:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", _DOCUMENT_APP, config=config)

    @schema.auth(refresh_interval=None)
    class ScopeKey:
        """A valid key of `scope` on every request (schemathesis may still drop it for negative cases)."""

        def get(self, case: Any, context: Any) -> str:
            return KEYS[scope]

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = case.headers or {}
            case.headers["Authorization"] = f"Bearer {data}"

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        real = {name: value for name, value in KNOWN_PATH_VALUES.items() if name in (path_parameters or {})}
        if not real:
            return st.just(path_parameters)
        return st.sampled_from([path_parameters, {**path_parameters, **real}])

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> Any:
        if isinstance(body, dict) and isinstance(body.get("experiment"), str):
            return st.sampled_from([body, *({**body, "experiment": key} for key in KNOWN_EXPERIMENTS)])
        return st.just(body)

    @schema.hook
    def before_add_examples(context: Any, examples: list[Any]) -> None:
        operation = context.operation
        path_parameters = {name: value for name, value in KNOWN_PATH_VALUES.items()
                           if "{" + name + "}" in operation.path}
        requests = EXAMPLES.get(operation.label, [{}] if path_parameters else [])
        for request in requests:
            examples.append(operation.Case(
                path_parameters=path_parameters or None, query=request.get("query"),
                body=request["body"] if "body" in request else NOT_SET,
                media_type=request.get("media_type", "application/json" if "body" in request else None),
                headers={"Authorization": f"Bearer {KEYS[scope]}"},
            ))

    return schema


SCHEMAS = {scope: _schema_for(scope) for scope in SCOPES}
DOCUMENT: dict[str, Any] = SCHEMAS["admin"].raw_schema


# ----------------------------------------------------------------------------------------- the database


def _daytime_zone() -> str:
    """An IANA zone where it is now early afternoon, so the quiet hours of spring-email never refuse the seed."""
    offset = max(-12, min(14, 13 - datetime.now(timezone.utc).hour))
    # Etc/GMT zones have inverted signs: Etc/GMT-3 is UTC+3.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def _seed(app: Any) -> None:
    with db_module.get_db(app).session() as session:
        for scope, token in KEYS.items():
            session.add(ApiKey(name=f"fuzz-{scope}", scope=scope, prefix=token.split("_")[1],
                               secret_hash=hash_secret(token), created_at=utcnow()))
    client = app.test_client()
    analyst = {"Authorization": f"Bearer {KEYS['analyst']}"}
    channel = {"Authorization": f"Bearer {KEYS['channel']}"}
    admin = {"Authorization": f"Bearer {KEYS['admin']}"}

    def ok(response: Any, status: int = 200) -> Any:
        assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
        return response.get_json()

    ok(client.post("/v1/experiments", json=spring_email(), headers=analyst), 201)
    ok(client.post("/v1/experiments/spring-email/start", headers=analyst))
    bandit = spring_email(key="spring-bandit", name="Spring bandit", contact_policy=None,
                          allocation={"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1})
    ok(client.post("/v1/experiments", json=bandit, headers=analyst), 201)
    ok(client.post("/v1/experiments/spring-bandit/start", headers=analyst))
    rows = ["subject_id,arm,conversion,revenue"] + [
        f"h-{i},{('control', 'mens', 'womens')[i % 3]},{int(i % 4 == 0)},{(i % 4 == 0) * 25.5}" for i in range(60)
    ]
    ok(client.post("/v1/experiments/spring-email/import", data="\n".join(rows) + "\n",
                   content_type="text/csv", headers=analyst))
    zone = _daytime_zone()
    decisions = ok(client.post("/v1/assign/batch", headers=channel, json={
        "experiment": "spring-email", "channel": "email",
        "subjects": [{"subject_id": f"c-{i}", "context": {"timezone": zone}} for i in range(10)]}))["assignments"]
    events = [{"event_id": f"seed-{i}", "type": "conversion", "assignment_id": d["assignment_id"], "value": 10.0,
               "occurred_at": utcnow().isoformat()} for i, d in enumerate(decisions) if d["assignment_id"]]
    if events:
        ok(client.post("/v1/events", headers=channel, json={"events": events}))
    ok(client.post("/v1/assign", headers=channel, json={"experiment": "spring-bandit", "subject_id": "c-1"}))
    ok(client.post("/v1/webhooks", headers=admin, json={"url": "http://127.0.0.1:9/hook"}), 201)


@pytest.fixture(scope="session")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One seeded SQLite file per test process; each test works on its own copy."""
    path = tmp_path_factory.mktemp("fuzz-template") / "nextbest.sqlite3"
    url = f"sqlite:///{path}"
    db_module.upgrade(url)
    app = create_app({"DATABASE_URL": url, **APP_SETTINGS})
    try:
        _seed(app)
    finally:
        db_module.get_db(app).dispose()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def fuzz_app(seeded_database: Path, tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "nextbest.sqlite3"
    shutil.copyfile(seeded_database, path)
    app = create_app({"DATABASE_URL": f"sqlite:///{path}", **APP_SETTINGS})
    yield app
    db_module.get_db(app).dispose()


# ----------------------------------------------------------------------------------------- checks


def _documented_statuses(case: Any) -> set[str]:
    operation = DOCUMENT["paths"][case.operation.path][case.operation.method.lower()]
    return set(operation.get("responses", {}))


def status_and_error_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """Status code conformance as DESIGN.md defines it, and the one error shape on every error."""
    status = response.status_code
    same_method = case.method.upper() == case.operation.method.upper()
    documented = _documented_statuses(case)
    if 200 <= status < 300 and same_method:
        assert str(status) in documented or f"{str(status)[0]}XX" in documented, (
            f"{case.operation.label} answered {status}, which its OpenAPI operation does not document "
            f"(documented: {sorted(documented)})"
        )
    if status < 400:
        return None
    # A request with a method the path does not serve is answered 405 (no operation to declare it on).
    assert str(status) in documented or (not same_method and status == 405), (
        f"{case.operation.label} answered {status}, which its OpenAPI operation does not declare "
        f"(declared: {sorted(documented)})"
    )
    assert status in CONTRACT_ERROR_STATUSES, f"{status} is not an error status of the contract"
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - any decoding problem is the finding
        raise AssertionError(f"{status} answer is not JSON: {response.text[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str) \
        and isinstance(error.get("details", []), list), f"{status} answer is not in the error shape: {body!r}"
    if status == 503:
        assert response.headers.get("retry-after"), "a 503 must say when to retry (Retry-After)"
    if status == 401:
        assert response.headers.get("www-authenticate"), "a 401 must name the scheme (WWW-Authenticate)"
    return None


CHECKS = [not_a_server_error, response_schema_conformance, status_and_error_contract]


# ----------------------------------------------------------------------------------------- the test


@schemathesis.pytest.parametrize(**SCHEMAS)
@settings(deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture,  # on purpose: one database copy per operation, shared by its examples
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api(case: Any, fuzz_app: Any) -> None:
    """Every generated request gets a well-formed, documented answer, and never a 5xx."""
    response = case.call(app=fuzz_app)
    case.validate_response(response, checks=CHECKS)


# ----------------------------------------------------------------------------------------- found cases

# Requests the fuzzer (or a variation of one it found) answered with a 500, pinned so they stay
# covered whatever the generator draws next time: an integer past the database column's range
# reached the query (SQLite: OverflowError; PostgreSQL: NumericValueOutOfRange at 2**31).
FOUND_CASES = [
    ("admin", "DELETE", "/v1/webhooks/7249158989905158683895005184"),
    ("admin", "DELETE", "/v1/webhooks/2147483648"),
    ("analyst", "GET", "/v1/experiments?cursor=99999999999999999999999"),
    ("analyst", "GET", "/v1/experiments?cursor=2147483648"),
]


@pytest.mark.parametrize(("scope", "method", "path"), FOUND_CASES, ids=[f"{m} {p}" for _, m, p in FOUND_CASES])
def test_found_cases_get_a_client_answer(api: Any, scope: str, method: str, path: str) -> None:
    """Out-of-range ids and cursors get a client answer (never a 5xx), on SQLite and PostgreSQL."""
    response = api.call(method, path, scope=scope)
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
    if response.status_code >= 400:
        assert response.status_code in (404, 422), response.get_data(as_text=True)
        assert set(response.get_json()["error"]) >= {"code", "message", "details"}


# ----------------------------------------------------------------------------------------- stateful

# Sequences of calls that feed each answer into the next (links schemathesis infers from the
# document: a created experiment's key to its report, a decision's assignment_id to its
# explanation and to events, and so on), with the admin key, which may call every route.
STATEFUL_SCENARIOS = 30
STATEFUL_STEPS = 10
_STATEFUL_SCHEMA = _schema_for("admin", schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"deterministic": True, "database": "none", "with-security-parameters": False},
    "phases": {"stateful": {"enabled": True, "max-steps": STATEFUL_STEPS}},
}))


def test_stateful_sequences_never_get_a_5xx(fuzz_app: Any) -> None:
    """Chains of linked calls (create, start, assign, send events, report, promote, ...) keep the contract."""

    answered: list[tuple[str, int]] = []

    class Workflow(_STATEFUL_SCHEMA.as_state_machine()):  # type: ignore[misc]
        def call(self, case: Any, **kwargs: Any) -> Any:
            response = case.call(app=fuzz_app)
            answered.append((case.operation.label, response.status_code))
            return response

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS,
                                   deadline=None, derandomize=True, database=None,
                                   suppress_health_check=list(HealthCheck)))
    # The chains really ran: linked operations (a path parameter taken from an earlier answer) succeeded.
    linked = {label for label, status in answered if "{" in label and 200 <= status < 300}
    assert len(answered) >= STATEFUL_SCENARIOS and linked, answered
