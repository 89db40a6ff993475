"""The newcomer's demo, at a reduced size, checked against the real data."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path

from service.run.demo import SEGMENT_TO_ARM, run_demo
from tests.conftest import DATA


def test_demo_runs_the_whole_loop_and_its_summary_matches_the_data(tmp_path: Path) -> None:
    out = io.StringIO()
    summary = run_demo(DATA / "hillstrom.csv", tmp_path, days=12, per_day=1500, port=0, stream=out)
    text = out.getvalue()
    with (DATA / "hillstrom.csv").open() as data:
        recipients = Counter(SEGMENT_TO_ARM[row["segment"]] for row in csv.DictReader(data))
    for arm, row in summary["ab"].items():
        low, high = row["visit_ci"]
        std_error = (high - low) / (2 * 1.96)
        # The published rate is itself an estimate, from one arm's customers: the two estimates differ by
        # both their errors. Outcomes are drawn from customers like each subject who got the arm, so the
        # demo estimates the published arm's rate at the whole population's mix of customers.
        published = row["published_visit_rate"]
        published_error = math.sqrt(published * (1 - published) / recipients[arm])
        # widened to 99.9%: three arms, and the service's own random draws move the sampled outcomes
        assert abs(row["visit_rate"] - published) < 3.29 * math.hypot(std_error, published_error), (arm, row)
        assert row["decisions"] > 1500
    assert summary["srm_warning"] is False
    final = summary["bandit"]["final_allocation"]
    assert final["mens"] > 0.5 and final["mens"] == max(final.values()), final
    report_html = (tmp_path / "hillstrom-ab-report.html").read_text()
    assert report_html.count("<table") >= 3 and 'id="chart-cumulative"' in report_html  # the dashboard's charts
    assert "0.0000" not in report_html and "<script" not in report_html
    assert "Analyst key: nb_" in text and "/dashboard/" in text
    assert summary["promotions"] and summary["promotions"][0]["winner"] == "mens"
