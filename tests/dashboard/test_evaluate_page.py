"""The dashboard's off-policy evaluation table, on the imported Hillstrom log."""

from __future__ import annotations

import re
from typing import Any

from service import clock
from tests.dashboard.test_pages import sign_in
from tests.service.test_import_api import hillstrom_spec, import_hillstrom


def test_evaluation_table_shows_candidates_with_the_mens_visit_rate(client: Any, api: Any,
                                                                     keys: dict[str, str]) -> None:
    spec = hillstrom_spec()
    spec["reward"] = {"event": "click"}
    spec["attribution_window_seconds"] = 60
    api.create_experiment(spec)
    import_hillstrom(api)
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/hillstrom")
    assert 'id="evaluate-link"' in page.text
    clock.advance(120)  # rewards are known once the windows have closed
    try:
        html = client.get("/dashboard/experiments/hillstrom/evaluate").text
    finally:
        clock.reset()
    row = re.search(r"<td>always mens</td>\s*<td>[^<]*</td>\s*<td>([0-9.]+)</td>", html)
    assert row is not None, html[:2000]
    assert row.group(1) == "0.1828"  # self-normalised IPS equals the Mens visit rate exactly
    assert "uniform random" in html and "Thompson sampling" in html
