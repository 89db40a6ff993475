"""Off-policy evaluation through the API on imported real logs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.test_import_api import hillstrom_spec, import_hillstrom


def test_evaluate_candidates_on_hillstrom(api: Any) -> None:
    spec = hillstrom_spec()
    spec["reward"] = {"event": "click"}
    spec["attribution_window_seconds"] = 60
    api.create_experiment(spec)
    import_hillstrom(api)
    from service import clock

    clock.advance(120)  # every imported decision's window has closed: rewards are known
    try:
        response = api.call("POST", "/v1/experiments/hillstrom/evaluate", json={"candidates": [
            {"name": "always-mens", "policy": {"name": "fixed", "arm": "mens"}},
            {"name": "uniform", "policy": {"name": "uniform"}},
            {"name": "ts", "policy": {"name": "thompson_sampling"}},
        ], "refit_every": 5000})
    finally:
        clock.reset()
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["decisions"] == 64000
    rows = {row["name"]: row for row in body["candidates"]}
    assert rows["always-mens"]["snips"]["value"] == pytest.approx(0.1828, abs=5e-5)  # Mens visit rate
    assert rows["uniform"]["snips"]["value"] == pytest.approx(0.1468, abs=5e-5)     # overall visit rate
    ips = rows["always-mens"]["ips"]
    assert ips["ci_low"] < 0.1828 < ips["ci_high"]
    assert rows["ts"]["dr"]["value"] > rows["uniform"]["dr"]["value"]
    bad = api.call("POST", "/v1/experiments/hillstrom/evaluate",
                   json={"candidates": [{"name": "x", "policy": {"name": "fixed", "arm": "kids"}}]})
    assert bad.status_code == 422
