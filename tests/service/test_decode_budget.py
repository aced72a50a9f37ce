"""The decode memory budget: a semaphore on bytes, estimated from headers before decoding."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.decode_budget import DecodeBudget
from service.errors import ImageTooLarge
from service.imaging import decode_array, decode_image
from service.main import create_app
from tests.service.conftest import embedded_settings
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource

MiB = 1024 * 1024


def _png(size: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), 7).save(buffer, format="PNG")
    return buffer.getvalue()


class RecordingBudget(DecodeBudget):
    """A budget that records what each decode reserved."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.reserved: list[int] = []

    def reserve(self, nbytes: int, what: str):  # type: ignore[no-untyped-def]
        self.reserved.append(nbytes)
        return super().reserve(nbytes, what)


def test_a_request_larger_than_the_whole_budget_is_refused_at_once():
    budget = DecodeBudget(10 * MiB)
    refused = pytest.raises(ImageTooLarge, match="HYCAS_MAX_DECODE_BYTES")
    with refused, budget.reserve(11 * MiB, "x"):
        pass
    assert budget.in_use == 0


def test_a_request_waits_for_its_bytes_while_smaller_ones_that_fit_run_beside_a_large_one():
    budget = DecodeBudget(100)
    order: list[str] = []
    large_holds = threading.Event()
    release_large = threading.Event()

    def large() -> None:
        with budget.reserve(80, "large"):
            order.append("large starts")
            large_holds.set()
            release_large.wait(5)
        order.append("large ends")

    def second_large() -> None:
        with budget.reserve(60, "second large"):
            order.append("second large starts")

    first = threading.Thread(target=large)
    first.start()
    large_holds.wait(5)
    with budget.reserve(20, "small"):  # fits beside the large one: no wait
        order.append("small runs")
    waiting = threading.Thread(target=second_large)
    waiting.start()
    time.sleep(0.2)
    assert "second large starts" not in order  # 80 + 60 > 100: it waits for its bytes
    release_large.set()
    first.join(5)
    waiting.join(5)
    assert order == ["large starts", "small runs", "large ends", "second large starts"]
    assert budget.in_use == 0


def test_the_reservation_covers_each_stage_and_is_released_after_decoding():
    budget = RecordingBudget(1024 * MiB)
    decoded = decode_image(_png(1024), (1, 8, 8), max_pixels=4096**2, budget=budget)
    assert decoded.tensor.shape == (1, 8, 8)
    pixels = 1024 * 1024
    # Pillow's 32-bit RGB pixels and the 8-bit RGB array at least, not the whole float64 image
    (reserved,) = budget.reserved
    assert 7 * pixels <= reserved < 7 * pixels + 64 * MiB
    assert budget.in_use == 0


def test_the_decoded_values_do_not_depend_on_the_budget():
    data = _png(300)
    with_budget = decode_image(data, (3, 8, 8), max_pixels=4096**2, budget=DecodeBudget(MiB * 64))
    without = decode_image(data, (3, 8, 8), max_pixels=4096**2)
    np.testing.assert_array_equal(with_budget.tensor, without.tensor)


def test_an_image_that_needs_more_than_the_budget_is_a_413_before_decoding():
    settings = embedded_settings(max_decode_bytes=4 * MiB)
    with TestClient(create_app(settings, SmallModelSource())) as client:
        response = client.post(
            "/v1/certify",
            files={"file": ("big.png", _png(1024), "image/png")},
            data={"model": SMALL_MODEL_ID},
        )
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "image_too_large"
        assert "1024×1024 RGB PNG" in error["message"]
        small = client.post(
            "/v1/certify",
            files={"file": ("small.png", _png(64), "image/png")},
            data={"model": SMALL_MODEL_ID, "n": "100"},
        )
        assert small.status_code == 202, small.text


def test_dicom_and_png_decodes_sharing_a_tight_budget_all_finish():
    """A decode never waits for the budget while holding the warning filters that other
    decodes need in turn (that would deadlock against one holding the budget)."""
    from tests.service.test_imaging import bundled

    files = [bundled("MR_small.dcm"), bundled("CT_small.dcm"), _png(512)]
    sizes = RecordingBudget(1024 * MiB)
    for data in files:
        decode_image(data, (1, 8, 8), max_pixels=4096**2, budget=sizes)
    budget = DecodeBudget(max(sizes.reserved))  # one decode at a time for the largest
    finished: list[int] = []

    def decode_many(worker: int) -> None:
        for _ in range(5):
            for data in files:
                decode_image(data, (1, 8, 8), max_pixels=4096**2, budget=budget)
        finished.append(worker)

    threads = [threading.Thread(target=decode_many, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(finished) == [0, 1, 2, 3]
    assert budget.in_use == 0


def test_a_json_array_is_converted_under_the_budget_too():
    budget = RecordingBudget(1024 * MiB)
    nested = np.full((3, 40, 50), 0.5).tolist()
    decoded = decode_array(nested, (1, 8, 8), max_pixels=4096**2, budget=budget)
    assert decoded.tensor.shape == (1, 8, 8)
    (reserved,) = budget.reserved
    assert reserved >= 3 * 8 * 3 * 40 * 50
    with pytest.raises(ImageTooLarge, match="3×40×50 array"):
        decode_array(nested, (1, 8, 8), max_pixels=4096**2, budget=DecodeBudget(1000))
