"""The gateway's memory under concurrent large uploads, measured on a real ``hycas serve``.

Twelve 4096×4096 RGB PNGs (single-colour: about 49 KB each, 48 MiB of pixels each once
decoded) sent at once must raise the process's peak RSS by less than 1 GiB, and its RSS must
come back within 100 MiB of where it was before them. Run with ``pytest -m slow -s`` to see
the figures.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from tests.service.gateway_process import GatewayProcess

MiB = 1024 * 1024
UPLOADS = 12


def _single_colour_png(size: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _peak_rss_since_reset(pid: int) -> int:
    """``VmHWM`` of ``/proc/<pid>/status``, in bytes (reset by writing 5 to ``clear_refs``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _certify(url: str, image: bytes) -> int:
    files = {"file": ("large.png", image, "image/png")}
    data = {"model": "digits-hycas", "n": "100", "n0": "10", "seed": "1"}
    response = httpx.post(f"{url}/v1/certify", files=files, data=data, timeout=120)
    return response.status_code


pytestmark = pytest.mark.slow  # a real server and 13 full-size decodes: about half a minute


@pytest.fixture
def gateway(tmp_path: Path):
    process = GatewayProcess(tmp_path / "gateway.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_twelve_concurrent_4096_uploads_stay_under_1_gib_and_memory_is_given_back(gateway):
    small = _single_colour_png(64, (10, 20, 30))
    assert _certify(gateway.url, small) == 202  # model loaded, torch warmed up
    large = _single_colour_png(4096, (200, 120, 40))
    assert len(large) < 100_000
    assert _certify(gateway.url, large) == 202  # one alone first: decoders and pools warm
    process = psutil.Process(gateway.process.pid)
    time.sleep(1.0)
    before = process.memory_info().rss
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")

    with ThreadPoolExecutor(UPLOADS) as pool:
        statuses = list(pool.map(lambda _: _certify(gateway.url, large), range(UPLOADS)))
    assert statuses == [202] * UPLOADS
    peak = _peak_rss_since_reset(process.pid)

    deadline = time.monotonic() + 15
    after = process.memory_info().rss
    while after > before + 100 * MiB and time.monotonic() < deadline:
        time.sleep(0.5)
        after = process.memory_info().rss
    figures = (
        f"RSS before {before / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB "
        f"(+{(peak - before) / MiB:.0f}), after {after / MiB:.0f} MiB"
    )
    print(figures)
    assert peak - before < 1024 * MiB, figures
    assert after - before < 100 * MiB, figures
