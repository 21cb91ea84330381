"""`serve` in a real browser: Debian's headless Chromium driven by Selenium through /usr/bin/chromedriver (never a
downloaded driver), against the app on uvicorn on 127.0.0.1 and, for the live bars, a run against the simulator."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from animal_sync.web import ServeConfig
from conftest import audited, cli
from web_fixtures import XSS_NAME, LiveServer, crafted_journal, debian_package

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One headless Chromium for the module, with a fresh profile and the console log kept."""
    reason = debian_package(CHROMIUM, "chromium") or debian_package(CHROMEDRIVER, "chromium-driver")
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_window_size(1280, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def errors(driver) -> list[dict]:
    """The console's errors since the last call (a CSP violation is one too)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(condition, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, "the page did not get there in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def xss_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return crafted_journal(tmp_path_factory.mktemp("browser") / "j.db", {0: XSS_NAME, 1: "Cat", 2: "Dog"}, in_doubt=True)


def test_the_overview_loads_with_no_console_errors(browser, xss_journal: Path) -> None:
    with LiveServer(ServeConfig((str(xss_journal),))) as server:
        errors(browser)
        browser.get(server.url)
        wait_for(lambda: browser.find_element("id", "state").text == "finished")
        assert browser.find_element("id", "num-posted").text == "0 of 10"  # one page listed: ten animals to come
        assert "animal-sync settle 1 --delivered" in browser.find_element("id", "exception-list").text
        assert len(browser.find_elements("css selector", "#donut-parts circle")) == 1  # all three batched
        assert browser.find_elements("css selector", "#events li")
        browser.get(server.url + "animals")
        assert errors(browser) == []


def test_the_bars_move_during_a_run_against_the_simulator(browser, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=600)
    journal = tmp_path / "live.db"
    with LiveServer(ServeConfig((str(journal),))) as server:
        browser.get(server.url)
        wait_for(lambda: browser.find_element("id", "state").text == "no run yet")
        run = subprocess.Popen(
            cli("run", "--journal", str(journal), "--base-url", sim.url, "--quiet", "--workers", "1", "--post-workers", "1", "--batch-size", "20"),
        )
        seen: list[tuple[float, float]] = []
        try:
            while run.poll() is None:
                fetched = float(browser.find_element("id", "bar-fetched").get_attribute("value"))
                posted = float(browser.find_element("id", "bar-posted").get_attribute("value"))
                if not seen or seen[-1] != (fetched, posted):
                    seen.append((fetched, posted))
                time.sleep(0.2)
        finally:
            run.wait(60)
        assert run.returncode == 0
        wait_for(lambda: browser.find_element("id", "num-posted").text == "600 of 600")
        assert browser.find_element("id", "state").text == "finished"
    during = [values for values in seen if 0 < values[1] < 600]
    assert len(during) >= 2, seen  # the posted bar was seen part-way at least twice
    assert seen == sorted(seen), seen  # and only ever forward
    assert errors(browser) == []
    assert audited(journal)["ok"]


def test_the_animals_search_finds_an_id(browser, xss_journal: Path) -> None:
    with LiveServer(ServeConfig((str(xss_journal),))) as server:
        browser.get(server.url + "animals")
        box = browser.find_element("id", "q")
        box.send_keys("2")
        box.submit()
        found = wait_for(lambda: "q=2" in browser.current_url and browser.find_elements("css selector", "article.animal"))
        assert [item.get_attribute("data-id") for item in found] == ["2"]
        assert found[0].find_element("css selector", ".name").text == "Dog"
        assert "batch 1 (in_doubt, 3 animals" in found[0].text


def test_the_trigger_refuses_a_request_without_the_token(browser, xss_journal: Path) -> None:
    with LiveServer(ServeConfig((str(xss_journal),), token="right-token")) as server:
        browser.get(server.url)
        browser.find_element("id", "trigger-button").click()
        result = wait_for(lambda: browser.find_element("id", "trigger-result").text.startswith("refused") and browser.find_element("id", "trigger-result").text)
        assert result.startswith("refused (401)")
        assert browser.find_elements("css selector", "#children li") == []  # nothing was started


def test_an_animal_named_script_shows_as_text(browser, xss_journal: Path) -> None:
    with LiveServer(ServeConfig((str(xss_journal),))) as server:
        errors(browser)
        browser.get(server.url + "animals?q=script")
        name = browser.find_element("css selector", "article.animal .name")
        assert name.text == XSS_NAME
        from selenium.common.exceptions import NoAlertPresentException

        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is the check that there is none
        assert XSS_NAME in browser.find_element("css selector", "article.animal pre").text
        assert errors(browser) == []
