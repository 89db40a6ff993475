"""Operations: metrics, JSON access logs with request ids (never keys), per-key rate limits."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from service.observability import JsonFormatter, RateLimiter
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
