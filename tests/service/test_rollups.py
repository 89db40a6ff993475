"""The report rollups: kept by triggers through every write path, equal to a rebuild from the logs, and
giving the report exactly what a scan of the logs gives."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select

from service.store import db as db_module
from service.store import rollup_sql, rollups
from service.store.models import ArmClusterSums, ArmDayRollup, Experiment, SubjectArmSums
from service.store.report_queries import report_input, window_report_input
from service.store.experiments import spec_of as experiment_spec
from tests.examples import spring_email

ARMS = ("control", "mens", "womens")


def _spec(key: str) -> dict[str, Any]:
    # Many decisions per subject, no contact policy to refuse them; a custom event too.
    return spring_email(key=key, contact_policy=None, custom_events=["add_to_cart"])


def _summed(session: Any, model: Any, keys: tuple[str, ...], columns: tuple[str, ...], eid: int) -> dict[Any, Any]:
    """A rollup table's rows added up over shards, rounded so that float sums compare."""
    out = {}
    for row in session.execute(select(model).where(model.experiment_id == eid)):
        item = row[0]
        key = tuple(getattr(item, k) for k in keys)
        values = out.setdefault(key, dict.fromkeys(columns, 0.0))
        for c in columns:
            values[c] += float(getattr(item, c))
    return {k: {c: round(v, 6) for c, v in values.items()} for k, values in out.items()
            if any(abs(v) > 1e-9 for v in values.values())}


def _tables(session: Any, eid: int) -> tuple[Any, ...]:
    return (
        _summed(session, SubjectArmSums, ("subject_id", "arm_key"), rollup_sql.SUBJECT_COLUMNS, eid),
        _summed(session, ArmDayRollup, ("arm_key", "day", "holdout"), rollup_sql.DAY_COLUMNS, eid),
        _summed(session, ArmClusterSums, ("arm_key",), rollup_sql.CLUSTER_COLUMNS, eid),
    )


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _assert_same_input(from_rollups: Any, from_logs: Any) -> None:
    for fast, slow in zip(from_rollups.arms, from_logs.arms, strict=True):
        assert (fast.arm, fast.decisions, fast.subjects) == (slow.arm, slow.decisions, slow.subjects)
        assert fast.reached == slow.reached and fast.event_counts == slow.event_counts, fast.arm
        assert _close(fast.expected_share, slow.expected_share)
        for name in ("revenue", "converter_revenue"):
            a, b = getattr(fast, name), getattr(slow, name)
            assert a.n == b.n and _close(a.sum, b.sum) and _close(a.sum_squares, b.sum_squares), (fast.arm, name)
        assert (fast.clusters is None) == (slow.clusters is None), fast.arm
        if fast.clusters is not None:
            assert set(fast.clusters) == set(slow.clusters)
            for metric, sums in fast.clusters.items():
                other = slow.clusters[metric]
                assert sums.subjects == other.subjects, (fast.arm, metric)
                for part in ("sum_n2", "sum_y2", "sum_ny"):
                    assert _close(getattr(sums, part), getattr(other, part)), (fast.arm, metric, part)
    assert [(d.day, d.arm, d.decisions, d.reached) for d in from_rollups.daily] == \
        [(d.day, d.arm, d.decisions, d.reached) for d in from_logs.daily]
    for fast, slow in zip(from_rollups.daily, from_logs.daily):
        assert _close(fast.revenue.sum, slow.revenue.sum) and _close(fast.revenue.sum_squares, slow.revenue.sum_squares)


def _check(app: Any, key: str) -> None:
    """Rollups agree with the logs; the report from them equals the report from a scan of the logs."""
    with db_module.get_db(app).session() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == key)).one()
        assert rollups.verify(session, experiment.id) == []
        spec = experiment_spec(experiment)
        _assert_same_input(report_input(session, experiment, spec),
                           window_report_input(session, experiment, spec, None, None))


def _random_history(api: Any, rng: random.Random, key: str, steps: int) -> None:
    """Decisions (single, batch, imported), events (with retries, duplicates, late and subject-attributed
    ones, custom events) and erasures, interleaved at random."""
    subjects = [f"s{i}" for i in range(14)]
    decided: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    now = datetime.now(timezone.utc)
    for step in range(steps):
        action = rng.choice(["assign", "assign", "batch", "import", "events", "events", "events", "retry",
                             "subject_event", "erase"])
        if action == "assign":
            decided.append(api.assign(key, rng.choice(subjects)))
        elif action == "batch":
            chosen = rng.sample(subjects, rng.randint(1, 5))
            decided += [a for a in api.assign_batch(key, [{"subject_id": s} for s in chosen]) if a["assignment_id"]]
        elif action == "import":
            lines = []
            for _ in range(rng.randint(1, 6)):
                decided_at = now - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 23))
                line: dict[str, Any] = {"subject_id": rng.choice(subjects), "arm": rng.choice(ARMS),
                                        "decided_at": decided_at.isoformat()}
                if rng.random() < 0.5:
                    line["conversion"] = 1
                    line["revenue"] = round(rng.uniform(1, 90), 2)
                lines.append(json.dumps(line))
            response = api.client.post(f"/v1/experiments/{key}/import", data="\n".join(lines).encode(),
                                       content_type="application/x-ndjson", headers=api.headers("analyst"))
            assert response.status_code == 200, response.get_json()
        elif action in ("events", "retry") and decided:
            if action == "retry" and sent:
                batch = rng.sample(sent, min(len(sent), rng.randint(1, 4)))
            else:
                batch = []
                for _ in range(rng.randint(1, 6)):
                    decision = rng.choice(decided)
                    kind = rng.choice(["open", "open", "click", "conversion", "unsubscribe", "add_to_cart"])
                    event: dict[str, Any] = {"event_id": f"e{step}-{len(batch)}", "type": kind,
                                             "assignment_id": decision["assignment_id"]}
                    if kind == "conversion":
                        event["value"] = round(rng.uniform(1, 120), 2)
                    batch.append(event)
                batch += batch[:1]  # a duplicate inside the batch
                sent += batch
            api.send_events(batch)
        elif action == "subject_event" and decided:
            decision = rng.choice(decided)
            api.send_events([{"event_id": f"se{step}", "type": "conversion", "experiment": key,
                              "subject_id": decision["subject_id"], "value": 12.5}])
        elif action == "erase":
            subject = rng.choice(subjects)
            assert api.call("DELETE", f"/v1/subjects/{subject}", scope="admin").status_code == 200
            decided = [d for d in decided if d["subject_id"] != subject]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_equal_a_rebuild_after_random_interleavings(app: Any, api: Any, seed: int) -> None:
    key = f"rollups-{seed}"
    api.create_experiment(_spec(key), start=True)
    rng = random.Random(seed)
    for round_ in range(3):
        _random_history(api, rng, key, steps=25)
        _check(app, key)
    with db_module.get_db(app).session() as session:
        eid = session.scalars(select(Experiment.id).where(Experiment.key == key)).one()
        incremental = _tables(session, eid)
        assert incremental[0], "the history made no decisions"
        rollups.rebuild(session, [eid])
        session.commit()
    with db_module.get_db(app).session() as session:
        assert _tables(session, eid) == incremental
        rollups.rebuild(session)  # every experiment at once
        session.commit()
    with db_module.get_db(app).session() as session:
        assert _tables(session, eid) == incremental
    _check(app, key)


def test_verify_names_a_rollup_that_drifted(app: Any, api: Any) -> None:
    api.create_experiment(_spec("drift"), start=True)
    decision = api.assign("drift", "s1")
    api.send_events([{"event_id": "d1", "type": "conversion", "assignment_id": decision["assignment_id"],
                      "value": 10.0}])
    with db_module.get_db(app).session() as session:
        eid = session.scalars(select(Experiment.id).where(Experiment.key == "drift")).one()
        assert rollups.verify(session, eid) == []
        row = session.scalars(select(ArmDayRollup).where(ArmDayRollup.experiment_id == eid)).first()
        row.converted += 1
        session.flush()
        problems = rollups.verify(session, eid)
        assert any("arm_day_rollups" in p and "converted" in p for p in problems), problems
        rollups.rebuild(session, [eid])
        assert rollups.verify(session, eid) == []


def test_the_report_reads_rollups_not_the_logs(app: Any, api: Any) -> None:
    """With the logs emptied behind the triggers' back, the whole-experiment report still has its numbers:
    it is served from the rollups (a segment of it is not)."""
    api.create_experiment(_spec("served"), start=True)
    decisions = [api.assign("served", f"s{i}") for i in range(30)]
    api.send_events([{"event_id": f"c{i}", "type": "conversion", "assignment_id": d["assignment_id"], "value": 5.0}
                     for i, d in enumerate(decisions[:9])])
    before = api.report("served")
    database = db_module.get_db(app)
    with database.session() as session:
        connection = session.connection()
        for statement in rollup_sql.drop_trigger_ddl(connection.dialect.name):
            connection.exec_driver_sql(statement)
        connection.exec_driver_sql("DELETE FROM decision_outcomes")
        connection.exec_driver_sql("DELETE FROM assignments")
        session.commit()
    after = api.report("served")
    assert [(a["arm"], a["decisions"], a["subjects"]) for a in after["arms"]] == \
        [(a["arm"], a["decisions"], a["subjects"]) for a in before["arms"]]
    assert sum(a["decisions"] for a in after["arms"]) == 30


def test_compaction_folds_every_backends_rows_and_keeps_the_totals(app: Any, api: Any) -> None:
    api.create_experiment(_spec("compact"), start=True)
    decisions = [api.assign("compact", f"s{i % 7}") for i in range(20)]
    api.send_events([{"event_id": f"k{i}", "type": "conversion", "assignment_id": d["assignment_id"], "value": 3.0}
                     for i, d in enumerate(decisions[:8])])
    database = db_module.get_db(app)
    with database.session() as session:
        eid = session.scalars(select(Experiment.id).where(Experiment.key == "compact")).one()
        before = _tables(session, eid)
        written = session.scalar(select(func.count()).select_from(ArmDayRollup).where(ArmDayRollup.shard != 0))
        folded = rollups.compact(session)
        session.commit()
    with database.session() as session:
        if session.get_bind().dialect.name == "postgresql":  # each backend wrote rows of its own
            assert written and folded >= written
        else:  # SQLite writes shard 0 only
            assert (written, folded) == (0, 0)
        assert session.scalar(select(func.count()).select_from(ArmDayRollup).where(ArmDayRollup.shard != 0)) == 0
        assert session.scalar(select(func.count()).select_from(ArmClusterSums).where(ArmClusterSums.shard != 0)) == 0
        assert _tables(session, eid) == before
        assert rollups.verify(session, eid) == []
