"""A real browser for the explorer page's tests and benchmark: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by selenium, with the network switched off and every request the page makes logged."""

from __future__ import annotations

import json
import shutil

import pytest

INSTALL = "apt-get install chromium chromium-driver; pip install selenium"


def find_chromium() -> tuple[str, str] | None:
    """(the browser, its driver), or None when either is missing."""
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def open_chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium with the network off (requests still logged); skips (in CI: fails) without one."""
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is missing: {INSTALL}")
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        pytest.skip(f"no Chromium and chromedriver on PATH: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                "downloadThroughput": 0, "uploadThroughput": 0})
    return driver


def requests_made(driver) -> list[str]:
    """The URLs the browser asked for since the last call (the performance log, drained)."""
    events = (json.loads(e["message"])["message"] for e in driver.get_log("performance"))
    return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def errors_logged(driver) -> list[str]:
    """The page's errors (uncaught exceptions, refused requests) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
