"""Operations: metrics, JSON access logs with request ids (never keys), per-key rate limits."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from service.http.observability import JsonFormatter, RateLimiter
from tests.conftest import spring_email


def test_metrics_need_admin_and_count_requests(api: Any) -> None:
    api.create_experiment(spring_email(contact_policy=None), start=True)
    api.assign("spring-email", "c-1")
    assert api.client.get("/metrics").status_code == 401
    assert api.call("GET", "/metrics", scope="analyst").status_code == 403
    body = api.call("GET", "/metrics", scope="admin").get_data(as_text=True)
    assert 'nextbest_requests_total{endpoint="decisions.assign",method="POST",status="200"}' in body
    assert "nextbest_request_seconds_bucket" in body


def test_access_log_is_json_with_request_id_and_never_the_key(api: Any, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("nextbest")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="nextbest"):
            response = api.client.get("/v1/experiments", headers={**api.headers("analyst"), "X-Request-Id": "req-42"})
    finally:
        logger.removeHandler(caplog.handler)
    assert response.headers["X-Request-Id"] == "req-42"
    record = next(r for r in caplog.records if r.name == "nextbest.access")
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-42" and line["status"] == 200 and line["key_name"] == "test-analyst"
    secret = api.keys["analyst"]
    assert all(secret not in JsonFormatter().format(r) for r in caplog.records)


def test_rate_limit_answers_429_with_retry_after(app: Any, api: Any) -> None:
    app.extensions["nextbest.ratelimiter"] = RateLimiter(rate=1.0, burst=2.0)
    statuses = [api.call("GET", "/v1/experiments").status_code for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    limited = api.call("GET", "/v1/experiments")
    assert limited.get_json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    # another key has its own bucket
    assert api.call("GET", "/v1/experiments", scope="admin").status_code == 200


def test_decisions_events_refits_and_promotions_are_counted(app: Any, api: Any) -> None:
    from prometheus_client import REGISTRY

    from service.store import db as db_module
    from service.jobs.learning import refit_all

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "logged": count("nextbest_decisions_total", kind="logged"),
        "default": count("nextbest_decisions_total", kind="default"),
        "accepted": count("nextbest_events_total", status="accepted"),
        "duplicate": count("nextbest_events_total", status="duplicate"),
        "refit": count("nextbest_refits_total", status="not_a_bandit"),
        "manual": count("nextbest_promotions_total", how="manual"),
        "rollback": count("nextbest_promotions_total", how="rollback"),
    }
    api.create_experiment(spring_email(contact_policy=None), start=True)
    decision = api.assign("spring-email", "c-1")
    api.assign_batch("spring-email", [{"subject_id": f"b-{i}"} for i in range(3)])
    from datetime import datetime, timezone

    event = {"event_id": "e-1", "type": "conversion", "assignment_id": decision["assignment_id"],
             "occurred_at": datetime.now(timezone.utc).isoformat()}
    assert api.send_events([event])["accepted"] == 1
    assert api.send_events([event])["duplicates"] == 1
    with db_module.get_db(app).session() as session:
        assert [r.status for r in refit_all(session, key="spring-email")] == ["not_a_bandit"]
    assert api.call("POST", "/v1/experiments/spring-email/promote", json={"winner": "mens"}).status_code == 200
    assert api.call("POST", "/v1/experiments/spring-email/rollback").status_code == 200
    api.create_experiment(spring_email(key="paused-email", contact_policy=None))
    api.assign("paused-email", "c-1")
    assert count("nextbest_decisions_total", kind="logged") == before["logged"] + 4
    assert count("nextbest_decisions_total", kind="default") == before["default"] + 1
    assert count("nextbest_events_total", status="accepted") == before["accepted"] + 1
    assert count("nextbest_events_total", status="duplicate") == before["duplicate"] + 1
    assert count("nextbest_refits_total", status="not_a_bandit") == before["refit"] + 1
    assert count("nextbest_promotions_total", how="manual") == before["manual"] + 1
    assert count("nextbest_promotions_total", how="rollback") == before["rollback"] + 1


def test_metrics_show_job_success_and_policy_age_and_take_a_metrics_key(app: Any, api: Any) -> None:
    from service.store import db as db_module
    from service.http.auth import create_key
    from service.jobs.scheduler import run_once

    api.create_experiment(spring_email(key="ts", contact_policy=None,
                                       allocation={"type": "bandit", "policy": {"name": "thompson_sampling"}}),
                          start=True)
    run_once(db_module.get_db(app))
    with db_module.get_db(app).session() as session:
        _, token = create_key(session, "prometheus", "metrics")
    scraped = api.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200
    lines = scraped.get_data(as_text=True).splitlines()
    for job in ("refit", "webhooks"):
        assert any(line.startswith(f'nextbest_job_last_success_timestamp_seconds{{job="{job}"}}') for line in lines)
    assert 'nextbest_policy_version{experiment="ts"} 1.0' in lines
    assert api.client.get("/v1/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_metrics_count_decisions_and_events_per_experiment(api: Any) -> None:
    from service.clock import iso_utc, utcnow

    api.create_experiment(spring_email(contact_policy=None), start=True)
    api.create_experiment(spring_email(key="autumn-email", contact_policy=None), start=True)

    def scrape() -> dict[str, float]:
        text = api.call("GET", "/metrics", scope="admin").get_data(as_text=True)
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(("nextbest_experiment_decisions_total{", "nextbest_experiment_events_total{"))}

    before = scrape()
    first = api.assign("spring-email", "c-1")
    api.assign("spring-email", "c-2")
    api.assign_batch("autumn-email", [{"subject_id": "c-3"}])
    api.send_events([{"event_id": "k-1", "type": "click", "assignment_id": first["assignment_id"],
                      "occurred_at": iso_utc(utcnow())},
                     {"event_id": "k-2", "type": "click", "experiment": "nowhere", "subject_id": "c-9",
                      "occurred_at": iso_utc(utcnow())}])
    after = scrape()

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved('nextbest_experiment_decisions_total{experiment="spring-email",kind="logged"}') == 2
    assert moved('nextbest_experiment_decisions_total{experiment="autumn-email",kind="logged"}') == 1
    assert moved('nextbest_experiment_events_total{experiment="spring-email"}') == 1
    assert moved('nextbest_experiment_events_total{experiment="autumn-email"}') == 0
