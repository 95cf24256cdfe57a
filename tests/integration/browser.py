"""Headless Chromium for the web app's tests: Debian's `chromium` and `chromium-driver` (installed by
scripts/install_browser.sh, which `make test` runs), driven with Selenium.

PAI_CHROMIUM and PAI_CHROMEDRIVER name other binaries (a CI image's Chrome, say)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("/usr/bin/chromedriver", "chromedriver")

# Without the background-networking switches Chromium keeps reaching for Google's services at
# start, and on a closed network its own connections are then refused.
CHROMIUM_SWITCHES = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--password-store=basic",
)
DESKTOP = (1280, 860)


def _find(explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for candidate in candidates:
        found = candidate if Path(candidate).is_file() else shutil.which(candidate)
        if found:
            return found
    return None


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver), or why there is none."""
    chromium = _find(os.environ.get("PAI_CHROMIUM"), BROWSERS)
    driver = _find(os.environ.get("PAI_CHROMEDRIVER"), DRIVERS)
    if chromium is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path)
        return (
            f"no {missing} on this machine: `make test` installs Debian's chromium and chromium-driver "
            "(scripts/install_browser.sh) where it runs as root or with sudo; or set PAI_CHROMIUM and PAI_CHROMEDRIVER"
        )
    return chromium, driver


@contextmanager
def chromium(binary: str, driver: str) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own empty profile) that keeps the page's console messages."""
    with tempfile.TemporaryDirectory(prefix="pai-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for switch in CHROMIUM_SWITCHES:
            options.add_argument(switch)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        browser = webdriver.Chrome(options=options, service=Service(driver))
        try:
            yield browser
        finally:
            browser.quit()
