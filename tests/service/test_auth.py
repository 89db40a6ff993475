"""Keys and scopes: every endpoint's scope matrix, hashing, revocation, the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from service.store import db as db_module
from service.cli import main as cli

SCOPES = ("channel", "analyst", "admin")


def _routes(app: Any) -> list[tuple[str, str, str]]:
    """(method, concrete path, required scope) for every route that needs a key."""
    routes = []
    for rule in app.url_map.iter_rules():
        required = app.config["ENDPOINT_SCOPES"].get(rule.endpoint)
        if required is None:
            continue
        path = rule.rule.replace("<key>", "spring-email").replace("<subject_id>", "c-1").replace(
            "<assignment_id>", "a-1")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path, required))
    return routes


def test_every_api_route_declares_a_scope(app: Any) -> None:
    unguarded = {r.endpoint for r in app.url_map.iter_rules()
                 if r.rule.startswith("/v1/") and r.endpoint not in app.config["ENDPOINT_SCOPES"]}
    assert unguarded == set()


def test_scope_matrix(app: Any, client: Any, keys: dict[str, str]) -> None:
    routes = _routes(app)
    assert len(routes) >= 12
    for method, path, required in routes:
        no_key = client.open(path, method=method, json={})
        assert no_key.status_code == 401, (method, path)
        assert no_key.get_json()["error"]["code"] == "unauthorized"
        bad_key = client.open(path, method=method, json={}, headers={"Authorization": "Bearer nb_abc_wrong"})
        assert bad_key.status_code == 401, (method, path)
        for scope in SCOPES:
            response = client.open(path, method=method, json={},
                                   headers={"Authorization": f"Bearer {keys[scope]}"})
            allowed = scope == "admin" or scope == required or (
                required == "channel_or_analyst" and scope in ("channel", "analyst"))
            if allowed:
                assert response.status_code not in (401, 403), (method, path, scope, response.get_json())
            else:
                assert response.status_code == 403, (method, path, scope)
                assert response.get_json()["error"]["code"] == "forbidden"


def test_secret_is_nowhere_in_the_database(app: Any, keys: dict[str, str]) -> None:
    database = db_module.get_db(app)
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).fetchall()
    dump = repr(rows)
    for token in keys.values():
        secret = token.split("_", 2)[2]
        assert secret not in dump
        assert token not in dump
    assert len(rows) == 3


def test_revocation_takes_effect_at_once(app: Any, client: Any, keys: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {keys['analyst']}"}
    assert client.get("/v1/experiments", headers=headers).status_code == 200
    from service.http.auth import revoke_key

    with db_module.get_db(app).session() as session:
        assert revoke_key(session, "test-analyst").name == "test-analyst"
    response = client.get("/v1/experiments", headers=headers)
    assert response.status_code == 401


def test_tampered_secret_with_valid_prefix_is_refused(client: Any, keys: dict[str, str]) -> None:
    token = keys["admin"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get("/v1/experiments", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def test_cli_keys_create_list_revoke(database_url: str, monkeypatch: pytest.MonkeyPatch, app: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--scope", "analyst", "--name", "ops"])
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    assert token.startswith("nb_")
    client = app.test_client()
    assert client.get("/v1/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listed = runner.invoke(cli, ["keys", "list"])
    assert "ops" in listed.output and token.split("_", 2)[2] not in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", "ops"])
    assert revoked.exit_code == 0
    assert client.get("/v1/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    bad = runner.invoke(cli, ["keys", "create", "--scope", "root", "--name", "x"])
    assert bad.exit_code != 0


@pytest.mark.postgres
def test_cached_keys_are_revoked_at_once_on_every_worker(database_url: str, app: Any, keys: dict[str, str]) -> None:
    import time

    from service import create_app
    from service.http.auth import revoke_key

    if not database_url.startswith("postgresql"):
        pytest.skip("the key cache listens for revocations on PostgreSQL")
    workers = [create_app({"DATABASE_URL": database_url, "NEXTBEST_KEY_CACHE": "on"}) for _ in range(2)]
    try:
        headers = {"Authorization": f"Bearer {keys['analyst']}"}
        for worker in workers:
            cache = worker.extensions["nextbest.keycache"]
            assert cache.enabled
            assert worker.test_client().get("/v1/experiments", headers=headers).status_code == 200
            assert cache.get(keys["analyst"]) is not None  # the next request needs no lookup
        with db_module.get_db(app).session() as session:  # revoked elsewhere (another worker, the CLI)
            revoke_key(session, "test-analyst")
        deadline = time.monotonic() + 2.0
        statuses: list[int] = []
        while time.monotonic() < deadline:
            statuses = [w.test_client().get("/v1/experiments", headers=headers).status_code for w in workers]
            if statuses == [401, 401]:
                break
            time.sleep(0.005)
        assert statuses == [401, 401]
        assert time.monotonic() < deadline
    finally:
        for worker in workers:
            db_module.get_db(worker).dispose()
