"""Results name what certified them by a stable name, never by host and process id."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.conftest import embedded_settings
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource


def _provenance_host(client: TestClient) -> str:
    request = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist(), "n": 100}
    response = client.post("/v1/certify?wait=30", json=request)
    assert response.status_code == 200, response.text
    return response.json()["result"]["provenance"]["host"]


@pytest.mark.parametrize("configured", [None, "gateway-eu-1"])
def test_results_show_the_configured_name_or_the_host_name_without_a_pid(monkeypatch, configured):
    if configured is not None:
        monkeypatch.setenv("HYCAS_WORKER_NAME", configured)
    with TestClient(create_app(embedded_settings(), SmallModelSource())) as client:
        host = _provenance_host(client)
    assert host == (configured or socket.gethostname())
    assert ":" not in host
