"""Headless Chromium (the system's ``chromium`` and ``chromedriver``) driven by Selenium,
with the outside network cut off; `tests.support.browser`.

The tests skip, saying why, where chromium is not installed, unless
``LRFR_REQUIRE_BROWSER=1`` (CI sets it, after installing chromium): there a missing
browser fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import REPO_ROOT

#: Where screenshots go (gitignored); LRFR_TEST_ARTIFACTS points elsewhere.
ARTIFACTS = Path(os.environ.get("LRFR_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")


def _executables() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    """(browser, driver) paths; skips (or fails, with LRFR_REQUIRE_BROWSER=1) without."""
    found = _executables()
    if found is None:
        reason = (
            "chromium and chromedriver are not installed "
            "(apt-get install chromium chromium-driver; .ci/run installs them)"
        )
        if os.environ.get("LRFR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"LRFR_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    pytest.importorskip("selenium", reason="selenium is not installed (the dev extra)")
    return found


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium WebDriver that can reach 127.0.0.1 only, logging the browser
    console and every network request."""
    browser, driver_path = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # containers run as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        # no outside network: every host name but the local address fails to resolve
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """The URLs the browser sent requests to since the last call (from the performance
    log); those the page's Content-Security-Policy blocked never left it and are not
    counted."""
    urls: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message.get("method") == "Network.loadingFailed" and params.get(
            "blockedReason"
        ) in ("csp", "content-type"):
            blocked.add(params["requestId"])
    return [url for request, url in urls.items() if request not in blocked]


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call: script errors, CSP refusals,
    failed loads; not the error answers of API calls (``/v1/...``), which the page shows."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and not re.match(r"^https?://[^/]+/v1/\S* - Failed to load resource", entry["message"])
    ]


def outside(urls: list[str], base: str) -> list[str]:
    """The URLs not served by ``base`` (data: and blob: URLs are the page's own)."""
    return [
        url for url in urls if not url.startswith((base, "data:", "blob:", "about:"))
    ]


def screenshot(driver: Any, name: str) -> Path:
    """Saves a screenshot of the page as ``ARTIFACTS/name.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
