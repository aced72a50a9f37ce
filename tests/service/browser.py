"""A headless Chromium driven by Selenium: Debian's ``chromium`` and ``chromium-driver``, never
a browser or driver downloaded at run time (``.ci/run`` installs both packages)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.deploy.conftest import require_binary

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""Where the page's states are saved, for the README and docs."""


def headless_chromium(width: int = 1200, height: int = 1500):
    """A Selenium driver of ``/usr/bin/chromium`` through ``/usr/bin/chromedriver``, with the
    page's console kept (``driver.get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = require_binary("chromium", "chromium")
    driver_path = require_binary("chromedriver", "chromium-driver")
    # Both paths are given, and Selenium Manager is told it is offline: it never downloads.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def console_errors(driver) -> list[str]:
    """The page's console messages at level SEVERE (errors, failed loads) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
