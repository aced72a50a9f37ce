"""The page shows an attack apart from the certificates: its distance rounded up as an upper
bound, and each bracket ``certified ≤ true robust radius ≤ found`` (``-m slow``: a browser)."""

from __future__ import annotations

import pytest

from tests.service.browser import console_errors
from tests.service.test_page import (
    DIGIT,
    browser,  # noqa: F401 (a fixture)
    by_id,
    open_page,
    send_image,
    wait_for_outcome,
)


@pytest.mark.slow
def test_an_attack_is_shown_as_an_upper_bound_beside_its_certificate(
    browser,  # noqa: F811 (the fixture)
    live_gateway,
):
    assert open_page(browser, live_gateway.url) == []
    by_id(browser, "options").click()
    for box in browser.find_elements("css selector", "#methods input"):
        if (box.get_attribute("value") in ("margin", "attack")) != box.is_selected():
            box.click()
    send_image(browser, DIGIT, **{"opt-seed": "7"})
    wait_for_outcome(browser)
    assert not by_id(browser, "error").is_displayed(), by_id(browser, "error").text

    certificates = by_id(browser, "certificates")
    rows = certificates.find_elements("css selector", "tr[data-method]")
    assert [row.get_attribute("data-method") for row in rows] == ["margin"]
    (found,) = by_id(browser, "attack").find_elements("css selector", "tr[data-classifier]")
    assert found.get_attribute("data-classifier") == "frozen_ensemble"
    assert "an upper bound, not a certificate" in found.text
    assert by_id(browser, "brackets").text.startswith("Bracket for the frozen ensemble F_K")
    assert "NaN" not in by_id(browser, "result").text
    assert console_errors(browser) == []
