"""Headless Chromium (Debian's `chromium` + `chromium-driver`) under Selenium, for the page tests and its screenshot."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

INSTALL = "apt-get install -y chromium chromium-driver"
# No background traffic of the browser's own: every request the tests see comes from the page.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-default-apps", "--disable-extensions"]


def chromium_paths() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


def chromium_driver(width: int = 1280, height: int = 900):
    """A fresh headless Chromium (own profile folder) that records its network events."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    if not browser or not driver_path:
        raise FileNotFoundError(f"chromium or chromedriver missing: {INSTALL}")
    profile = tempfile.mkdtemp(prefix="har-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.profile_folder = profile
    driver.get("about:blank")
    driver.get_log("performance")  # the browser's own start-up (its new-tab page): not the page's requests
    return driver


def quit_driver(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_folder, ignore_errors=True)


def requested_urls(performance_log: list[dict]) -> list[str]:
    """Every URL the page asked for, from Chrome's performance log (DevTools Network events)."""
    urls = []
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def foreign_requests(urls: list[str], service_url: str) -> list[str]:
    """The URLs that went to another host than the service (blob: and data: URLs never leave the page)."""
    service = urlsplit(service_url)
    return [url for url in urls if urlsplit(url).scheme not in ("blob", "data")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (service.scheme, service.netloc)]


def must_have_chromium() -> str | None:
    """None when the browser is installed; else why not, and CI must fail rather than skip."""
    browser, driver_path = chromium_paths()
    if browser and driver_path:
        return None
    return f"chromium/chromedriver not installed ({INSTALL})" + (" and CI is set" if os.environ.get("CI") else "")


def require_chromium() -> None:
    """For a browser test module's setup_module: fail in CI (env CI set) without the browser, else skip naming the install."""
    import pytest

    missing = must_have_chromium()
    if missing and os.environ.get("CI"):
        pytest.fail(missing, pytrace=False)
    if missing:
        pytest.skip(missing, allow_module_level=True)


def wait_for(driver, condition, timeout: float = 90, message: str = ""):
    """`condition(driver)` once it is truthy, polled every 0.2 s (90 s: a busy 2-core CI machine; seconds on a laptop)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message)


def write_params(path: Path, params: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
