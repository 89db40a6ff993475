"""Dashboard pages through the Flask test client: sign-in, CSRF, lifecycle forms, warnings, charts."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.store import db as db_module
from service.http.auth import revoke_key
from tests.dashboard._data import bandit_ndjson, bandit_spec, balanced_csv, csrf_of, skewed_csv, three_arm_spec


def sign_in(client: Any, token: str, next_path: str | None = None) -> Any:
    """Open the sign-in form and send the key with the form's CSRF token; return the response."""
    form = client.get("/dashboard/login")
    data = {"csrf_token": csrf_of(form.text), "key": token}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/dashboard/login", data=data)


def page_csrf(client: Any, path: str) -> str:
    return csrf_of(client.get(path).text)


def import_csv(api: Any, key: str, body: bytes) -> None:
    response = api.client.post(f"/v1/experiments/{key}/import", data=body, content_type="text/csv",
                               headers=api.headers("analyst"))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["rejected"] == []


def test_analyst_signs_in_and_sees_the_list(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"))
    import_csv(api, "spring", balanced_csv())
    first = client.get("/dashboard/")
    assert first.status_code == 303 and first.headers["Location"].startswith("/dashboard/login?next=/dashboard/")
    response = sign_in(client, keys["analyst"], "/dashboard/")
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert keys["analyst"] not in cookie  # the key itself never travels in the cookie
    page = client.get("/dashboard/")
    assert page.status_code == 200
    assert "Signed in as test-analyst." in page.text
    row = re.search(r'<tr data-key="spring">(.*?)</tr>', page.text, re.S)
    assert row is not None
    cells = row.group(1)
    assert "Spring offer" in cells and "draft" in cells and "900" in cells
    assert "Mens e-mail" in cells  # the leader on conversion rate
    assert "SRM" not in cells
    headers = page.headers
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "http" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "same-origin"
    assert "<script" not in page.text


def test_admin_key_signs_in(client: Any, keys: dict[str, str]) -> None:
    assert sign_in(client, keys["admin"]).status_code == 303
    assert client.get("/dashboard/").status_code == 200


def test_channel_key_and_bad_key_are_refused(client: Any, keys: dict[str, str]) -> None:
    refused = sign_in(client, keys["channel"])
    assert refused.status_code == 403
    assert "A channel key cannot sign in to the dashboard; use an analyst or admin key." in refused.text
    assert client.get("/dashboard/").status_code == 303
    wrong = sign_in(client, keys["analyst"] + "x")
    assert wrong.status_code == 401 and "not valid or has been revoked" in wrong.text
    assert client.get("/dashboard/").status_code == 303


def test_without_a_session_every_page_redirects_to_sign_in(client: Any, api: Any) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"))
    for path in ("/dashboard/", "/dashboard/experiments/spring"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["Location"].startswith("/dashboard/login")
    assert client.get("/dashboard/login").status_code == 200
    assert client.get("/dashboard/static/dashboard.css").status_code == 200


def test_sign_in_never_redirects_off_site(client: Any, keys: dict[str, str]) -> None:
    response = sign_in(client, keys["analyst"], "https://evil.example/dashboard/")
    assert response.headers["Location"] == "/dashboard/"
    client.post("/dashboard/logout", data={"csrf_token": page_csrf(client, "/dashboard/")})
    response = sign_in(client, keys["analyst"], "//evil.example/dashboard/")
    assert response.headers["Location"] == "/dashboard/"


def test_post_without_the_csrf_token_is_400(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"))
    client.get("/dashboard/login")
    assert client.post("/dashboard/login", data={"key": keys["analyst"]}).status_code == 400
    sign_in(client, keys["analyst"])
    missing = client.post("/dashboard/experiments/spring/lifecycle", data={"action": "start"})
    assert missing.status_code == 400 and "CSRF" in missing.text
    wrong = client.post("/dashboard/experiments/spring/lifecycle", data={"action": "start", "csrf_token": "x" * 43})
    assert wrong.status_code == 400
    assert client.post("/dashboard/logout").status_code == 400
    assert api.call("GET", "/v1/experiments/spring").get_json()["status"] == "draft"


def test_lifecycle_forms_change_status_and_audit_as_the_key(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"))
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/spring")
    assert 'id="action-start"' in page.text and 'id="action-pause"' not in page.text
    token = csrf_of(page.text)
    started = client.post("/dashboard/experiments/spring/lifecycle",
                          data={"csrf_token": token, "action": "start", "reason": "launch"})
    assert started.status_code == 303 and started.headers["Location"] == "/dashboard/experiments/spring"
    assert api.call("GET", "/v1/experiments/spring").get_json()["status"] == "running"
    page = client.get("/dashboard/experiments/spring")
    assert "Experiment started." in page.text and 'id="status">running<' in page.text
    assert 'id="action-pause"' in page.text and 'id="action-conclude"' in page.text

    concluded = client.post("/dashboard/experiments/spring/lifecycle",
                            data={"csrf_token": token, "action": "conclude", "winner": "mens"})
    assert concluded.status_code == 303
    body = api.call("GET", "/v1/experiments/spring").get_json()
    assert body["status"] == "concluded" and body["winner"] == "mens"

    entries = api.call("GET", "/v1/experiments/spring/audit").get_json()["entries"]
    assert [(e["actor"], e["action"]) for e in entries[-2:]] == [("test-analyst", "start"),
                                                                  ("test-analyst", "conclude")]
    assert entries[-2]["details"]["reason"] == "launch" and entries[-1]["details"]["winner"] == "mens"
    page = client.get("/dashboard/experiments/spring")
    assert "running → concluded, winner mens" in page.text and "draft → running: launch" in page.text

    # A transition the state does not allow is explained, not applied.
    again = client.post("/dashboard/experiments/spring/lifecycle", data={"csrf_token": token, "action": "pause"},
                        follow_redirects=True)
    assert "cannot pause an experiment that is concluded" in again.text
    assert api.call("GET", "/v1/experiments/spring").get_json()["status"] == "concluded"
    unknown = client.post("/dashboard/experiments/spring/lifecycle", data={"csrf_token": token, "action": "delete"})
    assert unknown.status_code == 400


def test_revoked_key_ends_the_session_at_once(app: Any, client: Any, keys: dict[str, str]) -> None:
    sign_in(client, keys["analyst"])
    assert client.get("/dashboard/").status_code == 200
    with db_module.get_db(app).session() as session:
        assert revoke_key(session, "test-analyst").name == "test-analyst"
    response = client.get("/dashboard/")
    assert response.status_code == 303 and response.headers["Location"].startswith("/dashboard/login")
    login = client.get(response.headers["Location"])
    assert "the key was revoked" in login.text
    assert client.get("/dashboard/").status_code == 303


def test_logout(client: Any, keys: dict[str, str]) -> None:
    sign_in(client, keys["analyst"])
    response = client.post("/dashboard/logout", data={"csrf_token": page_csrf(client, "/dashboard/")})
    assert response.status_code == 303
    assert client.get("/dashboard/").status_code == 303


def test_sample_ratio_mismatch_is_shown_prominently(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("skewed", "Skewed split"))
    import_csv(api, "skewed", skewed_csv())
    api.create_experiment(three_arm_spec("fair", "Fair split"))
    import_csv(api, "fair", balanced_csv())
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/skewed").text
    assert 'id="srm-warning"' in page and 'role="alert"' in page
    assert "Sample ratio mismatch" in page and "control 800 (expected 533)" in page
    # The warning comes before the numbers it casts doubt on.
    assert page.index('id="srm-warning"') < page.index('id="metric-conversion_rate"')
    assert 'id="srm-warning"' not in client.get("/dashboard/experiments/fair").text
    listing = client.get("/dashboard/").text
    skewed_row = re.search(r'<tr data-key="skewed">(.*?)</tr>', listing, re.S).group(1)
    fair_row = re.search(r'<tr data-key="fair">(.*?)</tr>', listing, re.S).group(1)
    assert "badge-danger" in skewed_row and "SRM" in skewed_row and "badge-danger" not in fair_row


def test_report_tables_and_charts(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"))
    import_csv(api, "spring", skewed_csv())
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/spring").text
    table = re.search(r'<table class="data metric" id="metric-conversion_rate">(.*?)</table>', page, re.S).group(1)
    mens = re.search(r'<tr data-arm="mens".*?</tr>', table, re.S).group(0)
    report = api.report("spring")
    row = next(r for r in next(m for m in report["metrics"] if m["metric"] == "conversion_rate")["arms"]
               if r["arm"] == "mens")
    assert f"{100 * row['value']:.2f}%" in mens and f"{100 * row['lift']:+.1f}%" in mens
    assert "control" in table and "Chance to beat control" in table and "p (Holm)" in table
    charts = re.findall(r'<figure class="chart-box" id="chart-(\w+)">\s*(<svg.*?</svg>)', page, re.S)
    assert [name for name, _ in charts] == ["cumulative", "lift"]
    for _, svg in charts:
        assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and 'class="chart"' in svg
        assert "<title>" in svg and "style=" not in svg and "<style" not in svg
    assert "style=" not in page  # nothing the CSP would block
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # several charts, still unique ids
    # Same data, same markup.
    assert re.findall(r"<svg.*?</svg>", client.get("/dashboard/experiments/spring").text, re.S) == \
        [svg for _, svg in charts]
    assert "draft → running" not in page and "imported 1,600 of 1,600 rows" in page


def test_bandit_experiment_shows_allocation_over_time(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(bandit_spec())
    response = api.client.post("/v1/experiments/bandit-banner/import", data=bandit_ndjson(),
                               content_type="application/x-ndjson", headers=api.headers("analyst"))
    assert response.status_code == 200 and response.get_json()["rejected"] == []
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/bandit-banner").text
    names = re.findall(r'<figure class="chart-box" id="chart-(\w+)">', page)
    assert names == ["cumulative", "lift", "allocation"]
    assert "Bandit estimates" in page and "SNIPS" in page
    assert "Bandit: <b>thompson sampling</b>" in page


def test_unknown_experiment_is_a_404_page(client: Any, keys: dict[str, str]) -> None:
    sign_in(client, keys["analyst"])
    response = client.get("/dashboard/experiments/nope")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "no experiment with key" in response.text


@pytest.mark.parametrize("status", ["running", "bogus"])
def test_list_filters_by_status(client: Any, api: Any, keys: dict[str, str], status: str) -> None:
    api.create_experiment(three_arm_spec("a-draft", "A draft"))
    api.create_experiment(three_arm_spec("a-running", "A running one"), start=True)
    sign_in(client, keys["analyst"])
    page = client.get(f"/dashboard/?status={status}").text
    assert 'data-key="a-running"' in page
    assert ('data-key="a-draft"' in page) is (status == "bogus")


def _metric_section(html: str, metric: str) -> str:
    return re.search(rf'<table class="data metric" id="metric-{metric}">(.*?)</table>', html, re.S).group(1)


def test_exported_report_has_the_pages_charts_and_words(client: Any, api: Any, keys: dict[str, str]) -> None:
    api.create_experiment(three_arm_spec("spring", "Spring offer"))
    import_csv(api, "spring", skewed_csv())
    response = api.call("GET", "/v1/experiments/spring/report?format=html")
    assert response.status_code == 200 and response.mimetype == "text/html"
    export = response.text
    # The dashboard's charts, as inline SVG.
    names = re.findall(r'<figure class="chart-box" id="chart-(\w+)">\s*<svg', export)
    assert names == ["cumulative", "lift"]
    # Metric names and arm names in words, p-values that never read 0.0000.
    assert "Conversion rate" in export and "Revenue per decision" in export and "Mens e-mail" in export
    assert ">conversion_rate<" not in export and "0.0000" not in export
    assert 'id="srm-warning"' in export and export.index('id="srm-warning"') < export.index('id="metric-conversion_rate"')
    assert export.index('id="metric-conversion_rate"') < export.index('id="arms"')
    arms = re.search(r'<table class="data" id="arms">(.*?)</table>', export, re.S).group(1)
    assert "Revenue (total)" in arms and "conversion " in arms
    assert "Unattributed events:" in export
    # One self-contained file: inline styles, no script, nothing fetched from anywhere.
    assert "<script" not in export and "<style>" in export and "<link" not in export
    assert not re.search(r'(?:src|href|action)\s*=\s*["\']?\s*(?:https?:)?//', export)
    assert not re.search(r"url\(\s*[\"']?(?!#)|@import", export)  # only the SVG's own clip paths
    assert "&#34;" not in export.split("</style>", 1)[0]  # the stylesheet is not escaped
    # The dashboard's page and the export show the same decision-metric numbers.
    sign_in(client, keys["analyst"])
    page = client.get("/dashboard/experiments/spring").text
    assert _metric_section(page, "conversion_rate") == _metric_section(export, "conversion_rate")


def test_exported_report_of_a_bandit_and_of_an_empty_experiment(api: Any) -> None:
    api.create_experiment(bandit_spec())
    response = api.client.post("/v1/experiments/bandit-banner/import", data=bandit_ndjson(),
                               content_type="application/x-ndjson", headers=api.headers("analyst"))
    assert response.status_code == 200
    export = api.call("GET", "/v1/experiments/bandit-banner/report?format=html").text
    assert re.findall(r'<figure class="chart-box" id="chart-(\w+)">', export) == ["cumulative", "lift", "allocation"]
    assert "Bandit estimates" in export and "Click rate" in export
    api.create_experiment(three_arm_spec("empty", "Nothing yet"))
    response = api.call("GET", "/v1/experiments/empty/report?format=html")
    assert response.status_code == 200 and "<svg" not in response.text and "0.0000" not in response.text
