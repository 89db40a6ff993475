"""Degenerate data is a stated condition on a row, never an exception: no control decisions, a single
decision, every decision converted, none converted, on the JSON/CSV/HTML report, the promotion
decision, the segment reports, the dashboard page and the promotion job. SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.store import db as db_module
from service.jobs.promotion import evaluate_all
from tests.conftest import Api, spring_email
from tests.dashboard.test_pages import sign_in

KEY = "degenerate"


def _spec(key: str = KEY) -> dict[str, Any]:
    # LTV-adjusted value is computed (a default subject value), so the LTV comparison runs too.
    return spring_email(key=key, contact_policy=None, metrics=["conversion_rate", "ltv_adjusted_value"],
                        default_subject_value=50.0,
                        promotion={"metric": "conversion_rate", "confidence": 0.95, "min_decisions_per_arm": 1,
                                   "min_runtime_seconds": 0, "action": "promote"})


def _import(api: Api, key: str, rows: list[tuple[str, str, int]]) -> None:
    body = "subject_id,arm,conversion,revenue,unsubscribe\n" + "".join(
        f"{subject},{arm},{converted},{10 * converted},0\n" for subject, arm, converted in rows)
    response = api.call("POST", f"/v1/experiments/{key}/import", data=body, content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["rejected"] == [], response.get_json()


def _put_tier(api: Api, subjects: list[str]) -> None:
    for subject in subjects:
        response = api.call("PUT", f"/v1/subjects/{subject}", scope="channel", json={"loyalty_tier": "gold"})
        assert response.status_code == 200, response.get_json()


CASES = {
    # early on: only the treatments have decisions
    "no control decisions": [(f"s-{i}", ("mens", "womens")[i % 2], i % 3 == 0) for i in range(12)],
    "a single decision": [("s-1", "mens", 1)],
    "all converted": [(f"s-{i}", ("control", "mens", "womens")[i % 3], 1) for i in range(9)],
    "none converted": [(f"s-{i}", ("control", "mens", "womens")[i % 3], 0) for i in range(9)],
    "0 % against 100 %": [(f"s-{i}", ("control", "mens", "womens")[i % 3], int(i % 3 == 1)) for i in range(9)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_degenerate_data_is_reported_not_raised(api: Api, client: Any, keys: dict[str, str], case: str) -> None:
    api.create_experiment(_spec(), start=True)
    rows = [(s, a, int(c)) for s, a, c in CASES[case]]
    _import(api, KEY, rows)
    _put_tier(api, sorted({s for s, _, _ in rows})[:3])

    report = api.report(KEY)
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"control", "mens", "womens"}
    if case == "no control decisions":
        assert arms["control"]["decisions"] == 0
        ltv_control = next(a for a in report["ltv"]["arms"] if a["arm"] == "control")
        assert ltv_control["value"]["error"] == "NO_DATA"
        others = [a for a in report["ltv"]["arms"] if a["arm"] != "control"]
        assert others and all(a["diff"]["error"] == "NO_DATA" for a in others)
    for fmt, kind in (("csv", "text/csv"), ("html", "text/html")):
        response = api.call("GET", f"/v1/experiments/{KEY}/report?format={fmt}")
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        assert response.mimetype == kind
    decision = api.call("GET", f"/v1/experiments/{KEY}/decision")
    assert decision.status_code == 200, decision.get_json()
    assert decision.get_json()["action"] in ("wait", "none", "notify", "promote")
    for by in ("loyalty_tier", "attributes.tier"):
        segments = api.call("GET", f"/v1/experiments/{KEY}/report/segments?by={by}")
        assert segments.status_code == 200, segments.get_json()

    assert sign_in(client, keys["analyst"]).status_code == 303
    page = client.get(f"/dashboard/experiments/{KEY}")
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    assert "<svg" in page.text


def test_a_bandit_without_decisions_reports_and_decides(api: Api) -> None:
    """Found by the stateful fuzzer: a bandit whose only decisions were erased had all expected shares 0,
    and the split check raised (500 on /decision)."""
    spec = _spec("bandit-empty")
    spec["allocation"] = {"type": "bandit", "policy": {"name": "thompson_sampling"}, "holdout": 0.1}
    api.create_experiment(spec, start=True)
    api.assign("bandit-empty", "only-one")
    assert api.call("DELETE", "/v1/subjects/only-one", scope="admin").status_code == 200
    for path in ("/report", "/report?format=csv", "/report?format=html", "/decision",
                 "/report/segments?by=loyalty_tier"):
        response = api.call("GET", f"/v1/experiments/bandit-empty{path}")
        assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
    assert api.report("bandit-empty")["srm"]["error"] == "NO_DATA"


def test_a_failing_experiment_does_not_stop_the_promotion_job(api: Api, app: Any, monkeypatch: Any) -> None:
    """Each experiment is evaluated on its own: one that raises is recorded as failed, the others go on."""
    api.create_experiment(_spec("first"), start=True)
    api.create_experiment(_spec("second"), start=True)
    for key in ("first", "second"):
        _import(api, key, [(f"{key}-{i}", ("control", "mens", "womens")[i % 3], int(i % 3 == 1)) for i in range(9)])
    from service.jobs import promotion

    real = promotion.decide

    def flaky(session: Any, experiment: Any) -> Any:
        if experiment.key == "first":
            raise RuntimeError("broken statistics")
        return real(session, experiment)

    monkeypatch.setattr(promotion, "decide", flaky)
    with db_module.get_db(app).session() as session:
        results = {r["experiment"]: r for r in evaluate_all(session, holder="test")}
    assert results["first"]["action"] == "failed" and "broken statistics" in results["first"]["error"]
    assert results["second"]["action"] != "failed"


def test_the_promote_command_evaluates_every_experiment_and_reports_failures(api: Api, app: Any,
                                                                            monkeypatch: Any) -> None:
    api.create_experiment(_spec("first"), start=True)
    api.create_experiment(_spec("second"), start=True)
    from service.jobs import promotion

    real = promotion.decide
    seen: list[str] = []

    def flaky(session: Any, experiment: Any) -> Any:
        seen.append(experiment.key)
        if experiment.key == "first":
            raise RuntimeError("broken statistics")
        return real(session, experiment)

    monkeypatch.setattr(promotion, "decide", flaky)
    from click.testing import CliRunner

    from service.cli import main as cli

    result = CliRunner().invoke(cli, ["promote"], env={"DATABASE_URL": app.config["DATABASE_URL"]})
    assert sorted(seen) == ["first", "second"], (result.output, result.exception)
    assert result.exit_code == 1 and "first" in result.output
    assert '"experiment": "second"' in result.output
