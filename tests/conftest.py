"""Fixtures in the shape of Flask's tutorial: app, client, runner — on SQLite and, when
TEST_DATABASE_URL is set, on PostgreSQL too (each test gets a fresh schema)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from service import create_app
from service.store import db as db_module
from service.http.auth import create_key
from service.config import normalise_database_url
from tests.examples import spring_email  # noqa: F401 - re-exported for the API tests

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PG_URL = os.environ.get("TEST_DATABASE_URL")


def pytest_report_header(config: Any) -> list[str]:
    if PG_URL:
        return [f"PostgreSQL tests: on ({PG_URL.rsplit('@', 1)[-1]})"]
    return ["PostgreSQL tests: SKIPPED (set TEST_DATABASE_URL to run them)"]


def _backends() -> list[Any]:
    return ["sqlite", pytest.param("postgresql", marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL is not set"),
    ])]


@pytest.fixture(autouse=True)
def _real_time() -> Iterator[None]:
    """Every test starts on the real clock: a test that moved the service's clock (simulations,
    promotion and refit tests) must not shift the next test's decisions away from its events."""
    from service import clock

    clock.reset()
    yield
    clock.reset()


@pytest.fixture(scope="session")
def pg_admin_url() -> str | None:
    return normalise_database_url(PG_URL) if PG_URL else None


def _fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'nextbest.sqlite3'}"
        return
    assert PG_URL
    base = normalise_database_url(PG_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_database(request.param, tmp_path)


@pytest.fixture
def app(database_url: str) -> Iterator[Any]:
    db_module.upgrade(database_url)
    application = create_app({"DATABASE_URL": database_url, "TESTING": True,
                              "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0})
    yield application
    db_module.get_db(application).dispose()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def keys(app: Any) -> dict[str, str]:
    """One key per scope: {"channel": token, "analyst": token, "admin": token}."""
    database = db_module.get_db(app)
    tokens = {}
    with database.session() as session:
        for scope in ("channel", "analyst", "admin"):
            _, tokens[scope] = create_key(session, f"test-{scope}", scope)
    return tokens


class Api:
    """Reads like the product's use: api.create_experiment(...), api.assign(...), api.send_events(...)."""

    def __init__(self, client: Any, keys: dict[str, str]):
        self.client = client
        self.keys = keys

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def call(self, method: str, path: str, scope: str = "analyst", json: Any = None, **kw: Any) -> Any:
        headers = {**self.headers(scope), **kw.pop("headers", {})}
        return self.client.open(path, method=method, json=json, headers=headers, **kw)

    def create_experiment(self, spec: dict[str, Any], start: bool = False) -> dict[str, Any]:
        response = self.call("POST", "/v1/experiments", json=spec)
        assert response.status_code == 201, response.get_json()
        if start:
            started = self.call("POST", f"/v1/experiments/{spec['key']}/start")
            assert started.status_code == 200, started.get_json()
            return started.get_json()
        return response.get_json()

    def assign(self, experiment: str, subject_id: str, context: dict[str, Any] | None = None,
               channel: str | None = "email", expect: int = 200) -> dict[str, Any]:
        body: dict[str, Any] = {"experiment": experiment, "subject_id": subject_id, "channel": channel}
        if context is not None:
            body["context"] = context
        response = self.call("POST", "/v1/assign", scope="channel", json=body)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def assign_batch(self, experiment: str, subjects: list[dict[str, Any]], channel: str | None = "email") -> Any:
        response = self.call("POST", "/v1/assign/batch", scope="channel",
                             json={"experiment": experiment, "channel": channel, "subjects": subjects})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["assignments"]

    def send_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.call("POST", "/v1/events", scope="channel", json={"events": events})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def report(self, experiment: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/experiments/{experiment}/report")
        assert response.status_code == 200, response.get_json()
        return response.get_json()


@pytest.fixture
def api(client: Any, keys: dict[str, str]) -> Api:
    return Api(client, keys)


def api_for(app: Any, name: str = "test") -> Api:
    """An Api on `app` with a fresh key per scope (for apps built with their own settings)."""
    tokens = {}
    with db_module.get_db(app).session() as session:
        for scope in ("channel", "analyst", "admin"):
            _, tokens[scope] = create_key(session, f"{name}-{scope}", scope)
    return Api(app.test_client(), tokens)


def send_at_once(database_url: str, events: list[dict[str, Any]], headers: dict[str, str],
                 workers: int = 4) -> list[Any]:
    """The same event batch from `workers` separate apps (each its own connections), released together;
    returns their responses."""
    import threading

    apps = [create_app({"DATABASE_URL": database_url}) for _ in range(workers)]
    barrier = threading.Barrier(len(apps))
    responses: list[Any] = []

    def send(worker: Any) -> None:
        client = worker.test_client()
        barrier.wait()
        responses.append(client.post("/v1/events", json={"events": events}, headers=headers))

    threads = [threading.Thread(target=send, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for worker in apps:
        db_module.get_db(worker).dispose()
    return responses
