"""Health, readiness, the migration guard and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from service import create_app
from service.store import db as db_module


def test_healthz_and_readyz(client: Any) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"


def test_unmigrated_database_is_refused_with_what_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    app = create_app({"DATABASE_URL": url})
    client = app.test_client()
    response = client.get("/v1/experiments", headers={"Authorization": "Bearer nb_x_y"})
    assert response.status_code == 503
    assert "nextbest db upgrade" in response.get_json()["error"]["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "not_migrated"
    db_module.upgrade(url)
    app2 = create_app({"DATABASE_URL": url})
    assert app2.test_client().get("/readyz").status_code == 200


def test_openapi_document_is_valid_and_complete(app: Any, client: Any) -> None:
    document = client.get("/openapi.json").get_json()
    validate(document)
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/") and rule.rule not in ("/healthz", "/readyz"):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    create = document["paths"]["/v1/experiments"]["post"]
    assert "requestBody" in create
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"}


def test_docs_page_works_offline(client: Any) -> None:
    page = client.get("/docs/swagger")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "openapi.json" in html
    assert "https://" not in html.split("<body")[0] or "cdn" not in html.lower()
