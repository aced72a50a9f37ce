"""The page at ``/`` in a real headless Chromium against a real ``hycas serve``.

By default: the page loads with no console error and a digits PNG goes through to its result,
the progress bar at 100 %. With -m slow: a DICOM CT slice and the input as the model sees it,
a file that is no image, API keys (401, then a key that works), a cancel. With
``UPDATE_SCREENSHOTS=1`` each state is saved under ``docs/screenshots/``, for the README and
``docs/client.md``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from tests.service.browser import SCREENSHOTS, console_errors, headless_chromium
from tests.service.gateway_process import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "examples" / "digit.png"
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
TIMEOUT = 60


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser):
    """``screenshot(name)`` saves the whole page as ``docs/screenshots/<name>.png`` when
    ``UPDATE_SCREENSHOTS=1`` (and does nothing otherwise: a capture costs CPU)."""

    def save(name: str) -> None:
        if not UPDATE_SCREENSHOTS:
            return
        width, height = browser.execute_script(
            "const page = document.documentElement; return [page.scrollWidth, page.scrollHeight]"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))

    return save


def by_id(browser, element_id: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def wait_for(browser, condition, timeout: float = TIMEOUT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)


def open_page(browser, url: str) -> list[str]:
    """Load the page until its models are listed (or it shows an error); its console errors."""
    browser.get(f"{url}/")
    wait_for(browser, lambda b: by_id(b, "model").is_enabled() or by_id(b, "error").is_displayed())
    return console_errors(browser)


def send_image(browser, path: Path | str, **options: str) -> None:
    """Choose ``path``, fill the folded options by input id (``opt-seed``…), press Certify."""
    by_id(browser, "file").send_keys(str(path))
    if options:
        by_id(browser, "options").click()
        for element_id, value in options.items():
            field = by_id(browser, element_id)
            field.clear()
            field.send_keys(value)
    by_id(browser, "submit").click()


def wait_for_outcome(browser) -> None:
    wait_for(
        browser, lambda b: by_id(b, "result").is_displayed() or by_id(b, "error").is_displayed()
    )


def test_a_digit_goes_through_to_its_certificates(browser, live_gateway, screenshot):
    assert open_page(browser, live_gateway.url) == []
    assert "digits-hycas" in by_id(browser, "model").text
    send_image(browser, DIGIT, **{"opt-seed": "7", "opt-n": "1000"})
    wait_for_outcome(browser)
    assert not by_id(browser, "error").is_displayed(), by_id(browser, "error").text
    assert by_id(browser, "progress").get_attribute("value") == "100"
    assert by_id(browser, "progress-text").text.startswith("100 % · succeeded")
    assert by_id(browser, "predicted").text == "6"
    rows = by_id(browser, "certificates").find_elements("css selector", "tr[data-method]")
    assert [row.get_attribute("data-method") for row in rows] == ["smoothing", "margin"]
    assert "With probability ≥ 99.9 %" in rows[0].text
    wait_for(browser, lambda b: "of ‖x‖₂" in by_id(b, "scale").text)
    screenshot("digit-result")
    assert console_errors(browser) == []


@pytest.mark.slow
def test_a_dicom_shows_the_input_as_the_model_sees_it(browser, live_gateway, screenshot):
    open_page(browser, live_gateway.url)
    send_image(browser, get_testdata_file("CT_small.dcm"), **{"opt-seed": "7"})
    wait_for_outcome(browser)
    assert not by_id(browser, "error").is_displayed(), by_id(browser, "error").text
    images = by_id(browser, "preview").find_elements("css selector", "img")
    sizes = [
        browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", i)
        for i in images
    ]
    # The received slice at its own 128×128, the model's 8×8 input, four noisy samples.
    assert sizes == [[128, 128], [8, 8]] + [[8, 8]] * 4
    steps = by_id(browser, "transforms").get_attribute("textContent")
    assert "decoded DICOM" in steps and "rescale" in steps and "resized 128×128 to 8×8" in steps
    assert "DICOM" in by_id(browser, "warnings").text
    by_id(browser, "transforms").find_element("xpath", "..").find_element(
        "tag name", "summary"
    ).click()
    screenshot("dicom-ct-input")
    assert console_errors(browser) == []


@pytest.mark.slow
def test_a_file_that_is_no_image_shows_the_apis_message(
    browser, live_gateway, screenshot, tmp_path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text, no image")
    expected = httpx.post(
        f"{live_gateway.url}/v1/certify",
        files={"file": ("notes.txt", notes.read_bytes())},
        data={"model": "digits-hycas"},
    ).json()["error"]
    open_page(browser, live_gateway.url)
    send_image(browser, notes)
    wait_for(browser, lambda b: by_id(b, "error").is_displayed())
    assert expected["message"] in by_id(browser, "error").text
    assert expected["code"] in by_id(browser, "error").text
    assert not by_id(browser, "result").is_displayed()
    screenshot("unknown-file-error")


@pytest.mark.slow
def test_a_running_job_is_cancelled(browser, live_gateway, screenshot):
    open_page(browser, live_gateway.url)
    send_image(browser, DIGIT, **{"opt-n": "200000", "opt-seed": "7"})
    wait_for(browser, lambda b: by_id(b, "progress-section").is_displayed())
    wait_for(browser, lambda b: by_id(b, "cancel").is_enabled())
    by_id(browser, "cancel").click()
    wait_for(browser, lambda b: by_id(b, "error").is_displayed())
    assert "cancelled" in by_id(browser, "error").text
    assert "cancelled" in by_id(browser, "progress-text").text
    assert int(by_id(browser, "progress").get_attribute("value")) < 100
    screenshot("cancelled")


@pytest.mark.slow
def test_api_keys_a_missing_key_is_refused_and_the_right_one_works(browser, tmp_path, screenshot):
    gateway = GatewayProcess(tmp_path / "gateway.log", api_keys="page-test-key", default_n="1000")
    try:
        gateway.wait_ready()
        browser.get(f"{gateway.url}/")
        browser.execute_script("sessionStorage.clear()")
        open_page(browser, gateway.url)
        error = by_id(browser, "error")
        assert error.is_displayed()
        assert "needs an API key" in error.text and "401" in error.text
        assert by_id(browser, "key-section").is_displayed()
        screenshot("api-key-401")
        by_id(browser, "api-key").send_keys("page-test-key")
        by_id(browser, "key-form").submit()
        wait_for(browser, lambda b: by_id(b, "model").is_enabled())
        assert not by_id(browser, "error").is_displayed()
        send_image(browser, DIGIT, **{"opt-seed": "7"})
        wait_for_outcome(browser)
        assert by_id(browser, "predicted").text == "6"
        stored = browser.execute_script("return sessionStorage.getItem('hycas-api-key')")
        assert stored == "page-test-key"
        assert browser.execute_script("return localStorage.length") == 0
        screenshot("api-key-accepted")
        browser.execute_script("sessionStorage.clear()")
    finally:
        gateway.stop()
