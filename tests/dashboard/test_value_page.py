"""The dashboard's value page: the last CLV fit and its holdout chart, on the CDNOW sample."""

from __future__ import annotations

import re
from typing import Any

from tests.dashboard.test_pages import sign_in
from tests.service.test_clv_api import import_cdnow


def test_value_page_shows_the_last_fit_and_its_holdout(client: Any, api: Any, keys: dict[str, str]) -> None:
    sign_in(client, keys["analyst"])
    empty = client.get("/dashboard/value")
    assert empty.status_code == 200 and 'id="no-fit"' in empty.text
    assert 'href="/dashboard/value"' in empty.text  # in the top navigation

    import_cdnow(api, "CDNOW_sample.txt")
    fitted = api.call("POST", "/v1/clv/fit", json={"as_of": "1997-09-30", "holdout_end": "1998-06-30"})
    assert fitted.status_code == 200
    holdout = fitted.get_json()["holdout"]
    html = client.get("/dashboard/value").text
    assert re.search(r'id="as-of">1997-09-30<', html)
    assert re.search(r'id="actual-total">1,882<', html)
    assert f'id="predicted-total">{holdout["predicted_total"]:,.0f}<' in html
    assert f'id="mae">{holdout["mae"]:.3f}<' in html
    assert "r 0.2426, α 4.4136, a 0.7929, b 2.4259" in html
    assert 'id="chart-holdout-by-frequency"' in html and 'id="chart-holdout-cumulative"' in html
    assert html.count("<svg") == 2 and "<script" not in html
    rows = re.findall(r"<tr><td>(\d\+?)</td><td>([\d,]+)</td>", html.split('id="by-frequency"')[1])
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4", "5", "6", "7+"]
    assert rows[0][1] == "1,411"  # customers with no repeat purchase by 1997-09-30
    assert 'id="one-time">1,411 of these customers' in html

    api.call("POST", "/v1/clv/fit", json={"as_of": "1997-09-30", "model": "mbgnbd"})
    again = client.get("/dashboard/value").text
    assert "<b>MBG/NBD</b>" in again and 'id="no-holdout"' in again and "<svg" not in again
