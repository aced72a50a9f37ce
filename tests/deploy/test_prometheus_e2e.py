"""End to end: a real Prometheus on loopback scrapes a running `hycas serve` (embedded mode)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits

from tests.deploy.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def referenced_metric_names() -> set[str]:
    """Every hycas_ series name the alert rules and the Grafana dashboard query."""
    rules = (ROOT / "deploy" / "prometheus" / "rules" / "hycas-alerts.yml").read_text()
    dashboard = (ROOT / "deploy" / "grafana" / "dashboards" / "hycas.json").read_text()
    return set(re.findall(r"\bhycas_[a-z_]+\b", rules + dashboard))


def digit_png() -> bytes:
    image = (load_digits().images[0] / 16.0 * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def query(prometheus_url: str, expr: str) -> list[dict]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def running_gateway(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCAS_")}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_prometheus_scrapes_hycas_series_after_a_certification(running_gateway, prometheus_server):
    response = httpx.post(
        f"{running_gateway}/v1/certify",
        params={"wait": 60},
        files={"file": ("digit.png", digit_png(), "image/png")},
        data={"model": "digits-hycas", "n": "2000", "seed": "3"},
        timeout=90,
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"

    target = running_gateway.removeprefix("http://")
    prometheus_server.start(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "hycas-gateway", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not query(prometheus_server.url, "hycas_jobs_total"):
        time.sleep(0.5)
    succeeded = query(prometheus_server.url, 'hycas_jobs_total{state="succeeded"}')
    assert succeeded and float(succeeded[0]["value"][1]) >= 1
    assert query(prometheus_server.url, 'up{job="hycas-gateway"}')[0]["value"][1] == "1"

    with urllib.request.urlopen(f"{prometheus_server.url}/api/v1/label/__name__/values") as r:
        exposed = set(json.load(r)["data"])
    missing = referenced_metric_names() - exposed
    assert not missing, f"rules or dashboard query series the service never exports: {missing}"
