"""History import of the real data sets through the API and the CLI, with row-level errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from service.store import db as db_module
from service.cli import main as cli
from service.store.models import Assignment, Event
from tests.conftest import DATA

HILLSTROM_COLUMNS = ("segment:arm,visit:click,spend:revenue,recency:context.recency,history:context.history,"
                     "mens:context.mens,womens:context.womens,newbie:context.newbie,zip_code:context.zip_code,"
                     "channel:context.channel,history_segment:context.history_segment")


def hillstrom_spec(key: str = "hillstrom") -> dict[str, Any]:
    return {
        "key": key, "name": "Hillstrom e-mail challenge",
        "arms": [{"key": "control", "name": "No E-Mail", "is_control": True},
                 {"key": "mens", "name": "Mens E-Mail"}, {"key": "womens", "name": "Womens E-Mail"}],
        "allocation": {"type": "fixed"}, "reward": {"event": "conversion"},
        "promotion": {"metric": "conversion_rate"},
    }


def import_hillstrom(api: Any, body: bytes | None = None, key: str = "hillstrom") -> dict[str, Any]:
    data = body if body is not None else (DATA / "hillstrom.csv").read_bytes()
    response = api.client.post(f"/v1/experiments/{key}/import?generate_subject_ids=true&columns={HILLSTROM_COLUMNS}", data=data,
                               content_type="text/csv", headers=api.headers("analyst"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def metric_row(report: dict[str, Any], metric: str, arm: str) -> dict[str, Any]:
    block = next(m for m in report["metrics"] if m["metric"] == metric)
    return next(a for a in block["arms"] if a["arm"] == arm)


def test_hillstrom_import_reproduces_the_published_results(app: Any, api: Any) -> None:
    api.create_experiment(hillstrom_spec())
    result = import_hillstrom(api)
    assert result["imported"] == 64000 and result["rejected"] == [] and result["duplicates"] == 0
    assert result["ignored_columns"] == []
    report = api.report("hillstrom")
    published = {  # MineThatData (2008): conversion, visit, spend per customer
        "mens": (0.01253, 0.1828, 1.423), "womens": (0.00884, 0.1514, 1.077), "control": (0.00573, 0.1062, 0.653),
    }
    for arm, (conversion, visit, spend) in published.items():
        assert metric_row(report, "conversion_rate", arm)["value"] == pytest.approx(conversion, abs=5e-5)
        assert metric_row(report, "click_rate", arm)["value"] == pytest.approx(visit, abs=5e-5)
        assert metric_row(report, "revenue_per_decision", arm)["value"] == pytest.approx(spend, abs=5e-4)
    assert {a["arm"]: a["decisions"] for a in report["arms"]} == {"mens": 21307, "womens": 21387, "control": 21306}
    assert report["srm"]["warning"] is False
    # Sending the same file again imports nothing twice.
    again = import_hillstrom(api)
    assert again["imported"] == 0 and again["duplicates"] == 64000
    with db_module.get_db(app).session() as session:
        assert session.scalar(select(func.count()).select_from(Assignment)) == 64000
        row = session.scalars(select(Assignment).limit(1)).one()
        assert set(row.context) == {"recency", "history", "mens", "womens", "newbie", "zip_code", "channel",
                                    "history_segment"}


def test_corrupted_hillstrom_copy_rejects_rows_by_line(api: Any) -> None:
    api.create_experiment(hillstrom_spec())
    table = list(csv.reader(io.StringIO((DATA / "hillstrom.csv").read_text())))[:201]
    header, rows = table[0], table[1:]
    seg, visit, spend, conv = (header.index(c) for c in ("segment", "visit", "spend", "conversion"))
    rows[4][seg] = "Kids E-Mail"          # line 6: unknown arm
    rows[9][visit] = "-1"                 # line 11: negative count
    rows[19][visit] = "1.5"               # line 21: fractional count
    rows[29][spend], rows[29][conv] = "12.5", "0"  # line 31: revenue without conversion
    rows[39] = rows[39][:5]               # line 41: short row (missing arm)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    body = out.getvalue().encode()
    result = import_hillstrom(api, body)
    assert result["imported"] == 195
    rejected = {r["line"]: r["reason"] for r in result["rejected"]}
    assert set(rejected) == {6, 11, 21, 31, 41}
    assert "unknown arm" in rejected[6] and "whole count" in rejected[11] and "whole count" in rejected[21]
    assert "revenue without a conversion" in rejected[31] and "arm is required" in rejected[41]


def _obd_ndjson(path: Path) -> bytes:
    lines = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            lines.append(json.dumps({
                "subject_id": f"u{row['']}", "arm": f"item-{row['item_id']}", "propensity": float(row["propensity_score"]),
                "decided_at": row["timestamp"].replace(" ", "T"), "click": int(row["click"]),
                "context": {f"user_feature_{i}": row[f"user_feature_{i}"] for i in range(4)} | {
                    "position": int(row["position"])},
            }))
    return "\n".join(lines).encode()


def test_open_bandit_dataset_import_keeps_logged_propensities(app: Any, api: Any) -> None:
    arms = [{"key": f"item-{i}", "is_control": i == 0} for i in range(80)]
    api.create_experiment({"key": "obd-bts", "name": "ZOZOTOWN Bernoulli TS log", "arms": arms,
                           "allocation": {"type": "bandit", "policy": {"name": "thompson_sampling"}},
                           "reward": {"event": "click"}})
    body = _obd_ndjson(DATA / "obd" / "bts_all.csv")
    response = api.client.post("/v1/experiments/obd-bts/import", data=body, content_type="application/x-ndjson",
                               headers=api.headers("analyst"))
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert result["imported"] == 10000 and result["rejected"] == []
    with db_module.get_db(app).session() as session:
        propensities = session.scalars(select(Assignment.propensity)).all()
        clicks = session.scalar(select(func.count()).select_from(Event).where(Event.type == "click"))
    source = list(csv.DictReader((DATA / "obd" / "bts_all.csv").open()))
    assert sorted(propensities) == pytest.approx(sorted(float(r["propensity_score"]) for r in source))
    assert clicks == sum(int(r["click"]) for r in source)


def test_import_errors(api: Any) -> None:
    api.create_experiment(hillstrom_spec())
    wrong_type = api.client.post("/v1/experiments/hillstrom/import", data=b"a,b", content_type="application/pdf",
                                 headers=api.headers("analyst"))
    assert wrong_type.status_code == 415
    bad_map = api.client.post("/v1/experiments/hillstrom/import?columns=segment", data=b"subject_id,arm\n1,mens",
                              content_type="text/csv", headers=api.headers("analyst"))
    assert bad_map.status_code == 422
    ndjson = b'{"subject_id": "a", "arm": "mens"}\nnot json\n{"subject_id": "b", "arm": "mens", "click": NaN}\n'
    response = api.client.post("/v1/experiments/hillstrom/import", data=ndjson,
                               content_type="application/x-ndjson", headers=api.headers("analyst"))
    assert response.status_code == 200
    assert response.get_json()["imported"] == 1
    assert [r["line"] for r in response.get_json()["rejected"]] == [2, 3]


def test_cli_import(app: Any, api: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    api.create_experiment(hillstrom_spec())
    monkeypatch.setenv("DATABASE_URL", database_url)
    path = tmp_path / "part.csv"
    path.write_text("\n".join((DATA / "hillstrom.csv").read_text().splitlines()[:101]))
    result = CliRunner().invoke(cli, ["import", "hillstrom", str(path), "--columns", HILLSTROM_COLUMNS,
                                        "--generate-subject-ids"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imported"] == 100
