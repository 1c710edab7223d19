"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, to check the
page as a user's browser shows it: `tests/test_serve.py` and `scripts/page_screenshot.py`."""

from __future__ import annotations

import shutil

# offline machines: no background connections, no component downloads, a throwaway profile
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=900,1000",
]


class ChromiumMissing(RuntimeError):
    pass


def chromium_driver():
    """A Selenium driver for headless Chromium; `ChromiumMissing` names what to install."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise ChromiumMissing("Debian's chromium and chromium-driver are not installed (scripts/setup.sh --dev installs them)")
    try:
        from selenium import webdriver
    except ImportError:
        raise ChromiumMissing("selenium is not installed (pip install 's2t-hf[dev]')") from None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # the driver's path is given, so Selenium Manager never tries to download one
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))


def recognise_in_page(driver, url: str, audio_path: str, timeout: float = 60.0) -> str:
    """Open the page at `url`, upload `audio_path` as a user would and return the top name shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, "status").text.startswith("Ready"))
    driver.find_element(By.ID, "file").send_keys(str(audio_path))
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, "top-name").text)
    return driver.find_element(By.ID, "top-name").text
