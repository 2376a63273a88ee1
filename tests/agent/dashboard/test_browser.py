"""The dashboard in a real browser: headless Chromium driven by selenium.

Opens the fleet page (and refreshes it without a reload), an asset page (charts
drawn, zoom by dragging across a chart) and labels an alert through the login and
the label form. Screenshots go to the test's directory, and to
``$EW_SCREENSHOTS`` when set (that is how docs/images/dashboard-*.png are made).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import insert

from agent import schema as t
from agent.sqlite import open_engine
from tests.agent.dashboard.conftest import TOKEN, Served

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
WAIT_S = 15

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="edgewatch-chromium-")
    options = Options()
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _shot(driver: WebDriver, name: str, tmp_path: Path) -> None:
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1400, min(max(height + 20, 600), 2400))
    path = tmp_path / f"dashboard-{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    target = os.environ.get("EW_SCREENSHOTS")
    if target:
        shutil.copyfile(path, Path(target) / path.name)
    driver.set_window_size(1400, 900)


def test_fleet_asset_and_labelling_in_chromium(
    browser: WebDriver, local: Served, tmp_path: Path
) -> None:
    # A page being replaced (a form's redirect, a link) leaves the elements a condition
    # just found stale: look again rather than fail.
    wait = WebDriverWait(
        browser,
        WAIT_S,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    base = local.url.rstrip("/")

    # Fleet: every asset, worst first; a new asset appears on refresh, no reload.
    browser.get(base + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
    assert len(rows) == 8
    assert "alerting" in rows[0].text
    _shot(browser, "fleet", tmp_path)
    engine = open_engine(local.db, create=False)
    with engine.begin() as conn:
        conn.execute(
            insert(t.assets).values(
                site="plant-a", name="pump-new", first_seen_ms=1, last_seen_ms=2, state="healthy"
            )
        )
    engine.dispose()
    browser.execute_script("document.body.setAttribute('data-marker', 'same page')")
    browser.execute_script("EWDashboard.refreshFleet()")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")) == 9)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-marker") == "same page"
    assert browser.find_element(By.ID, "count").text == "9 assets"

    # Asset: the first (alerting) asset's charts, then zoom by dragging across one.
    browser.find_element(By.CSS_SELECTOR, "#fleet tbody tr:first-child a").click()
    wait.until(ec.url_contains("/assets/"))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-drawn") == "1")
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    assert len(charts) >= 3  # score, RUL, one per sensor
    lines = browser.find_elements(By.CSS_SELECTOR, "figure.chart path.line")
    assert any(len(line.get_attribute("d") or "") > 100 for line in lines)
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart path.band")  # the RUL interval
    # The whole record (a week's range), where the fault's onset shows.
    browser.find_element(By.LINK_TEXT, "7d").click()
    wait.until(ec.url_contains("since="))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-drawn") == "1")
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    _shot(browser, "asset", tmp_path)
    before = browser.current_url
    overlay = charts[0].find_element(By.CSS_SELECTOR, "rect.overlay")
    drag = ActionChains(browser).move_to_element_with_offset(overlay, -200, 0)
    drag.click_and_hold().move_by_offset(150, 0).release().perform()
    wait.until(lambda d: d.current_url != before and "since=" in d.current_url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-drawn") == "1")

    # Alerts: log in with the token, label the newest alert with a note.
    browser.get(base + "/alerts")
    browser.find_element(By.LINK_TEXT, "Log in").click()
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "form.label-form")))
    row = browser.find_element(By.CSS_SELECTOR, "#alerts tbody tr")
    alert_id = int(str(row.get_attribute("id")).removeprefix("alert-"))
    form = row.find_element(By.CSS_SELECTOR, "form.label-form")
    Select(form.find_element(By.NAME, "label")).select_by_value("false_alarm")
    form.find_element(By.NAME, "note").send_keys("valve <b>cleaning</b> & flush")
    form.find_element(By.NAME, "by").send_keys("ana")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: "false_alarm" in d.find_element(By.ID, f"alert-{alert_id}").text)
    cell = browser.find_element(By.CSS_SELECTOR, f"#alert-{alert_id} td.label")
    assert "valve <b>cleaning</b> & flush" in cell.text  # shown as typed, never as markup
    assert not cell.find_elements(By.TAG_NAME, "b")
    _shot(browser, "alerts", tmp_path)
    with sqlite3.connect(local.db) as conn:
        stored = conn.execute(
            "SELECT label, note, by FROM alert_labels WHERE alert_id = ? ORDER BY id DESC",
            (alert_id,),
        ).fetchone()
    assert stored == ("false_alarm", "valve <b>cleaning</b> & flush", "ana")
