"""The embedded-mode app with a small real model, and the images the tests send."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.config import Settings
from service.main import create_app
from tests.service.gateway_process import GatewayProcess
from tests.workers.small_models import SmallModelSource


@pytest.fixture(autouse=True)
def _no_hycas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test, never from the developer's environment."""
    import os

    for name in list(os.environ):
        if name.startswith("HYCAS_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)


def embedded_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"redis_url": None, "default_n": 200, "default_batch_size": 100}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings() -> Settings:
    return embedded_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, SmallModelSource())) as test_client:
        yield test_client


LIVE_GATEWAY_SETTINGS = {"max_queued_jobs": "1", "default_n": "2000"}
"""The shared gateway's settings: one unfinished job at a time (a second submission meets a
429 while one runs) and light default certificates."""


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One real ``hycas serve`` (embedded mode, the shipped models) shared by the client and
    page tests, which leave no job unfinished."""
    gateway = GatewayProcess(
        tmp_path_factory.mktemp("live-gateway") / "gateway.log", **LIVE_GATEWAY_SETTINGS
    )
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.stop()


def png_bytes(size: tuple[int, int] = (28, 28), mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wait_until_finished(client: TestClient, job_id: str, timeout: float = 30.0, **kwargs) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}", **kwargs)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.05)
