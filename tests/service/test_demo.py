"""The newcomer's demo, at a reduced size, checked against the real data."""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from service.run.demo import SEGMENT_TO_ARM, run_demo
from service.store import experiments as store_experiments
from service.usecases import decisions as decisions_module
from tests.conftest import DATA


def test_demo_runs_the_whole_loop_and_its_summary_matches_the_data(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Every random number comes from a seed, so the demo gives the same numbers on every run: experiment
    # salts (which split the A/B test and seed the bandit's policy) are counted out in order, and the
    # service's decisions draw from one seeded generator instead of one per thread seeded from the OS.
    # Unseeded, the A/B test's promotion was borderline in some runs (its lower bound at -0.001).
    salts = itertools.count(1)
    monkeypatch.setattr(store_experiments.secrets, "token_hex", lambda n=8: f"{next(salts):0{2 * n}x}")
    generator = np.random.default_rng(2008)
    monkeypatch.setattr(decisions_module, "_thread_rng", lambda: generator)
    out = io.StringIO()
    summary = run_demo(DATA / "hillstrom.csv", tmp_path, days=12, per_day=3000, port=0, stream=out)
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
