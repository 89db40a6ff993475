"""The dashboard in a real browser: headless Chromium against the app on a real threaded server.

Chromium and its driver come from the system (Debian packages chromium, chromium-driver); Selenium
is pointed at /usr/bin/chromedriver and never downloads a driver. Screenshots at laptop and
phone size go to tests/screenshots/ for a person to look at.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from service import create_app
from service.store import db as db_module
from service.http.auth import create_key
from tests.conftest import Api, _backends, _fresh_database
from tests.dashboard._data import skewed_csv, three_arm_spec
from tests.service.test_import_api import hillstrom_spec, import_hillstrom

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
LAPTOP = (1366, 900)
PHONE = (390, 844)

missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
pytestmark = pytest.mark.skipif(
    bool(missing), reason=f"browser tests need {' and '.join(missing)} (apt-get install chromium chromium-driver)"
)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class Live:
    base_url: str
    backend: str
    analyst_key: str
    channel_key: str


@pytest.fixture(scope="module", params=_backends())
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The app on 127.0.0.1 at a free port, with Hillstrom and a skewed experiment imported through the API."""
    databases = _fresh_database(request.param, tmp_path_factory.mktemp("live"))
    url = next(databases)
    db_module.upgrade(url)
    app = create_app({"DATABASE_URL": url, "NEXTBEST_POLICY_REFRESH_SECONDS": 0.0})
    with db_module.get_db(app).session() as session:
        _, analyst = create_key(session, "Ann Analyst", "analyst")
        _, channel = create_key(session, "esp", "channel")
    api = Api(app.test_client(), {"analyst": analyst})
    api.create_experiment(hillstrom_spec())
    assert import_hillstrom(api)["imported"] == 64000
    api.create_experiment(three_arm_spec("skewed-split", "Winter e-mail (broken split)"), start=True)
    response = api.client.post("/v1/experiments/skewed-split/import", data=skewed_csv(days=14),
                               content_type="text/csv", headers=api.headers("analyst"))
    assert response.status_code == 200, response.get_json()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="live-dashboard", daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", request.param, analyst, channel)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        db_module.get_db(app).dispose()
        next(databases, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile and nothing that phones home."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nextbest-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}", f"--window-size={LAPTOP[0]},{LAPTOP[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or a browser
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# What a person does


def viewport(driver: Any, size: tuple[int, int], mobile: bool = False) -> None:
    """Make the page exactly this many CSS pixels wide and high (a phone also gets a phone's viewport rules)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(driver: Any, name: str, live: Live) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}-{live.backend}.png"
    assert driver.save_screenshot(str(path)), path
    return path


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def console_errors(driver: Any) -> list[str]:
    """Errors the page caused, such as a CSP violation or a missing file."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def sign_in(driver: Any, live: Live, key: str) -> None:
    """Fill in the sign-in form and wait for the answer: the list, or the reason for a refusal."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{live.base_url}/dashboard/")
    assert driver.current_url.startswith(f"{live.base_url}/dashboard/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(ec.any_of(ec.presence_of_element_located((By.ID, "experiments")),
                                              ec.presence_of_element_located((By.ID, "login-error"))))


def test_analyst_reads_a_report_and_starts_the_experiment(browser: Any, live: Live) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    viewport(driver, LAPTOP)
    driver.get_log("browser")  # start with an empty console

    # A channel key is turned away with a reason.
    sign_in(driver, live, live.channel_key)
    assert "cannot sign in to the dashboard" in text(driver, "#login-error")
    assert any("403" in m for m in console_errors(driver))  # the refusal itself; nothing else may fail below

    # The analyst signs in and lands on the list.
    sign_in(driver, live, live.analyst_key)
    assert driver.title == "Experiments · nextbest"
    assert "Ann Analyst" in text(driver, ".who-name")
    hillstrom = text(driver, 'tr[data-key="hillstrom"]')
    assert "Hillstrom e-mail challenge" in hillstrom and "64,000" in hillstrom
    assert "Mens E-Mail 1.25%" in hillstrom
    assert "SRM" in text(driver, 'tr[data-key="skewed-split"]')
    screenshot(driver, "list-1366x900", live)

    # The experiment page: the numbers a person reads and charts with a real size.
    driver.find_element(By.LINK_TEXT, "Hillstrom e-mail challenge").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "metric-conversion_rate")))
    assert text(driver, '#metric-conversion_rate tr[data-arm="mens"] td.value') == "1.25%"
    assert text(driver, '#metric-conversion_rate tr[data-arm="womens"] td.value') == "0.88%"
    assert text(driver, '#metric-conversion_rate tr[data-arm="control"] td.value') == "0.57%"
    mens = text(driver, '#metric-conversion_rate tr[data-arm="mens"]')
    assert "21,307" in mens and "+118.8%" in mens and ">99.9%" in mens
    assert driver.find_elements(By.ID, "srm-warning") == []
    for name in ("cumulative", "lift"):
        svg = driver.find_element(By.CSS_SELECTOR, f"#chart-{name} svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 100, (name, svg.size)
    screenshot(driver, "experiment-1366x900", live)

    # Start it with a click: the status changes and the history names the key.
    assert text(driver, "#status") == "DRAFT"  # text-transform: the stylesheet is applied
    driver.find_element(By.CSS_SELECTOR, '#lifecycle input[name="reason"]').send_keys("browser launch")
    driver.find_element(By.ID, "action-start").click()
    WebDriverWait(driver, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "RUNNING"))
    assert "Experiment started." in text(driver, ".flash-ok")
    latest = text(driver, "#audit tbody tr:first-child")
    assert "Ann Analyst" in latest and "start" in latest and "draft → running: browser launch" in latest
    assert driver.find_element(By.ID, "action-pause").is_displayed()

    # On a phone: no sideways scrolling of the page, only of the wide tables.
    viewport(driver, PHONE, mobile=True)
    driver.refresh()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "metric-conversion_rate")))
    page_width = driver.execute_script("return document.documentElement.scrollWidth")
    assert page_width <= PHONE[0], page_width
    scroller = driver.find_element(By.CSS_SELECTOR, "#metric-conversion_rate").find_element(By.XPATH, "..")
    assert driver.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", scroller)
    assert driver.find_element(By.CSS_SELECTOR, "#chart-lift svg").size["width"] <= PHONE[0]
    screenshot(driver, "experiment-390x844", live)
    driver.get(f"{live.base_url}/dashboard/")
    screenshot(driver, "list-390x844", live)
    assert console_errors(driver) == []


def test_sample_ratio_mismatch_warning_is_seen_first(browser: Any, live: Live) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    viewport(driver, LAPTOP)
    driver.get_log("browser")
    sign_in(driver, live, live.analyst_key)
    driver.get(f"{live.base_url}/dashboard/experiments/skewed-split")
    warning = driver.find_element(By.ID, "srm-warning")
    assert warning.is_displayed()
    assert "Sample ratio mismatch" in warning.text and "do not trust" in warning.text
    # Above the fold, and above the table whose numbers it questions.
    assert warning.location["y"] + warning.size["height"] < LAPTOP[1]
    assert warning.location["y"] < driver.find_element(By.ID, "metric-conversion_rate").location["y"]
    red = warning.value_of_css_property("border-left-color")
    assert red.startswith("rgba(180, 35, 24"), red
    chart = driver.find_element(By.CSS_SELECTOR, "#chart-cumulative svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    screenshot(driver, "srm-1366x900", live)
    viewport(driver, PHONE, mobile=True)
    driver.refresh()
    assert driver.find_element(By.ID, "srm-warning").is_displayed()
    screenshot(driver, "srm-390x844", live)
    assert console_errors(driver) == []


def test_analyst_promotes_from_the_checklist_and_looks_up_a_customer(browser: Any, live: Live) -> None:
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.dashboard._data import bandit_ndjson, bandit_spec

    analyst = {"Authorization": f"Bearer {live.analyst_key}"}
    assert requests.post(f"{live.base_url}/v1/experiments", json=bandit_spec(), headers=analyst,
                         timeout=30).status_code == 201
    imported = requests.post(f"{live.base_url}/v1/experiments/bandit-banner/import", data=bandit_ndjson(),
                             headers={**analyst, "Content-Type": "application/x-ndjson"}, timeout=60)
    assert imported.status_code == 200, imported.text
    decision = requests.post(f"{live.base_url}/v1/assign", headers={"Authorization": f"Bearer {live.channel_key}"},
                             json={"experiment": "skewed-split", "subject_id": "c-browser", "channel": "email"},
                             timeout=30).json()
    assert decision["assignment_id"], decision

    driver = browser
    viewport(driver, LAPTOP)
    driver.get_log("browser")
    sign_in(driver, live, live.analyst_key)

    # The bandit's allocation, day by day.
    driver.get(f"{live.base_url}/dashboard/experiments/bandit-banner")
    chart = driver.find_element(By.CSS_SELECTOR, "#chart-allocation svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100, chart.size
    screenshot(driver, "bandit-allocation-1366x900", live)

    # The promotion checklist says what holds; promote by hand, then roll back.
    driver.get(f"{live.base_url}/dashboard/experiments/skewed-split")
    items = driver.find_elements(By.CSS_SELECTOR, "#promotion-conditions li")
    assert items and any("failed" in item.get_attribute("class") for item in items)
    assert any("srm" in item.get_attribute("data-condition") for item in items)
    screenshot(driver, "promotion-panel-1366x900", live)
    driver.find_element(By.CSS_SELECTOR, '#promote-winner option[value="mens"]').click()
    driver.find_element(By.ID, "action-promote").click()
    WebDriverWait(driver, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "PROMOTED: MENS"))
    assert "Promoted mens." in text(driver, ".flash-ok")
    driver.find_element(By.ID, "action-rollback").click()
    WebDriverWait(driver, 10).until(ec.text_to_be_present_in_element((By.ID, "status"), "RUNNING"))
    assert "Rolled back" in text(driver, ".flash-ok")
    assert "rollback" in text(driver, "#audit tbody tr:first-child")

    # A customer: look them up, open a decision's explanation.
    driver.find_element(By.ID, "nav-subjects").click()
    driver.find_element(By.ID, "subject_id").send_keys("c-browser")
    driver.find_element(By.CSS_SELECTOR, "#subject-lookup button").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "decisions")))
    assert text(driver, "#subject-id") == "c-browser"
    assert "skewed-split" in text(driver, "#decisions")
    screenshot(driver, "subject-1366x900", live)
    driver.find_element(By.CSS_SELECTOR, "#decisions a.explain-link").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "explanation")))
    assert "c-browser" in text(driver, "#explanation") and decision["arm"] in text(driver, "#explanation")
    assert console_errors(driver) == []
