"""/metrics under `nextbest serve` as an operator runs it: gunicorn workers whose counters are
summed, gauges read from the database, and a `metrics` key that reads nothing else."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from service.store import db as db_module
from service.http.auth import create_key
from tests.conftest import spring_email


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(app: Any, database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """`nextbest serve` with two workers on the test database, and one key per scope."""
    with db_module.get_db(app).session() as session:
        tokens = {scope: create_key(session, f"serve-{scope}", scope)[1]
                  for scope in ("channel", "analyst", "metrics")}
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(DATABASE_URL=database_url, NEXTBEST_JOBS="off", NEXTBEST_ACCESS_LOG="off")
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2",
                               "--threads", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a busy machine starts gunicorn slowly; only failure waits this long
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=10).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a worker still importing
                pass
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server exited"
            assert time.monotonic() < deadline, "nextbest serve did not answer /healthz"
            time.sleep(0.2)
        yield base, tokens
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_metrics_count_decisions_across_workers_and_need_the_metrics_scope(
        served: tuple[str, dict[str, str]]) -> None:
    base, tokens = served
    auth = {scope: {"Authorization": f"Bearer {token}"} for scope, token in tokens.items()}
    for spec in (spring_email(contact_policy=None),
                 spring_email(key="spring-bandit", contact_policy=None,
                              allocation={"type": "bandit", "policy": {"name": "thompson_sampling"}})):
        assert requests.post(f"{base}/v1/experiments", json=spec, headers=auth["analyst"], timeout=30).status_code == 201
        assert requests.post(f"{base}/v1/experiments/{spec['key']}/start", headers=auth["analyst"],
                             timeout=30).status_code == 200
    with requests.Session() as channel:
        for i in range(6):  # a fresh connection each time, so both workers may answer
            answer = requests.post(f"{base}/v1/assign", headers={**auth["channel"], "Connection": "close"}, timeout=30,
                                   json={"experiment": "spring-email", "subject_id": f"c-{i}", "channel": "email"})
            assert answer.status_code == 200, answer.text
        del channel

    scraped = requests.get(f"{base}/metrics", headers=auth["metrics"], timeout=30)
    assert scraped.status_code == 200
    assert scraped.headers["Content-Type"].count("charset") == 1
    lines = scraped.text.splitlines()
    assert 'nextbest_decisions_total{kind="logged"} 6.0' in lines
    assert any(line.startswith('nextbest_policy_age_seconds{experiment="spring-bandit"} ') for line in lines)
    assert not any('experiment="spring-email"' in line and line.startswith("nextbest_policy_age") for line in lines)
    assert "nextbest_webhook_backlog 0.0" in lines and "nextbest_database_up 1.0" in lines
    assert 'nextbest_experiments{status="running"} 2.0' in lines

    assert requests.get(f"{base}/v1/experiments", headers=auth["metrics"], timeout=30).status_code == 403
    assert requests.post(f"{base}/v1/assign", headers=auth["metrics"], timeout=30,
                         json={"experiment": "spring-email", "subject_id": "x"}).status_code == 403
    assert requests.get(f"{base}/metrics", headers=auth["channel"], timeout=30).status_code == 403
