"""``/metrics`` exposes the gateway's and the job runner's metrics with their types."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.workers.small_models import SMALL_MODEL_ID

EXPECTED_TYPES = {
    "hycas_http_requests": "counter",
    "hycas_http_request_duration_seconds": "histogram",
    "hycas_jobs": "counter",
    "hycas_job_duration_seconds": "histogram",
    "hycas_job_queue_wait_seconds": "histogram",
    "hycas_noisy_samples": "counter",
    "hycas_certificates": "counter",
    "hycas_abstentions": "counter",
    "hycas_certified_radius": "histogram",
    "hycas_models_loaded": "gauge",
    "hycas_jobs_running": "gauge",
    "hycas_queue_length": "gauge",
    "hycas_forward_batch_size": "histogram",
    "hycas_jobs_per_forward_batch": "histogram",
    "hycas_batcher_wait_seconds": "histogram",
    "hycas_forward_samples": "counter",
    "hycas_forward_seconds": "counter",
}


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample_value(family, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_after_a_job(client):
    before = scrape(client)
    samples_before = (
        sample_value(
            before["hycas_noisy_samples"], "hycas_noisy_samples_total", model=SMALL_MODEL_ID
        )
        if "hycas_noisy_samples" in before
        else 0.0
    )
    response = client.post(
        "/v1/certify?wait=20",
        json={"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.3).tolist(), "n": 120, "n0": 8},
    )
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    # The runner records a job's metrics just after writing its end, and a waiting request
    # wakes at that write: a scrape at once may precede them by a moment.
    deadline = time.monotonic() + 10
    while True:
        families = scrape(client)
        family = families.get("hycas_noisy_samples")
        samples = (
            0.0
            if family is None
            else sample_value(family, "hycas_noisy_samples_total", model=SMALL_MODEL_ID)
        )
        if samples - samples_before >= 128 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for name, kind in EXPECTED_TYPES.items():
        assert name in families, name
        assert families[name].type == kind, name
    assert samples - samples_before == 128
    # The batcher saw them too, and the margin certificate's one frozen draw.
    assert (
        sample_value(
            families["hycas_forward_samples"], "hycas_forward_samples_total", model=SMALL_MODEL_ID
        )
        >= 128 + 1
    )
    assert sample_value(families["hycas_jobs"], "hycas_jobs_total", state="succeeded") >= 1
    assert (
        sample_value(families["hycas_certificates"], "hycas_certificates_total", method="margin")
        >= 1
    )
    assert (
        sample_value(
            families["hycas_certified_radius"], "hycas_certified_radius_count", method="margin"
        )
        >= 1
    )
    # Zero abstentions is a series at 0, not a missing one (the abstention-rate alert divides).
    assert any(
        s.name == "hycas_abstentions_total"
        and s.labels == {"model": SMALL_MODEL_ID, "method": "margin"}
        for s in families["hycas_abstentions"].samples
    )
    assert (
        sample_value(
            families["hycas_http_requests"],
            "hycas_http_requests_total",
            route="/v1/certify",
            method="POST",
            status="200",
        )
        >= 1
    )
    assert (
        sample_value(
            families["hycas_http_request_duration_seconds"],
            "hycas_http_request_duration_seconds_count",
            route="/v1/certify",
            method="POST",
            status="200",
        )
        >= 1
    )
    assert (
        sample_value(families["hycas_models_loaded"], "hycas_models_loaded", model=SMALL_MODEL_ID)
        == 1
    )
    assert sample_value(families["hycas_queue_length"], "hycas_queue_length") == 0


def test_unmatched_routes_and_odd_methods_do_not_create_label_values(client):
    client.get("/no/such/path/12345")
    assert client.request("FOOBAR12345", "/v1/certify").status_code == 405
    families = scrape(client)
    samples = families["hycas_http_requests"].samples
    routes = {s.labels["route"] for s in samples}
    assert "unmatched" in routes
    assert not any("12345" in route for route in routes)
    odd = [s for s in samples if s.labels["route"] == "/v1/certify" and s.labels["status"] == "405"]
    assert "other" in {s.labels["method"] for s in odd}
    assert not any("FOOBAR" in s.labels["method"] for s in samples)


def test_an_unreachable_redis_is_a_503_and_metrics_are_still_served():
    import socket

    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.service.conftest import embedded_settings
    from tests.workers.small_models import SmallModelSource

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = embedded_settings(redis_url=f"redis://127.0.0.1:{port}/13")
    with TestClient(create_app(settings, SmallModelSource())) as client:
        request = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist()}
        for response in (client.post("/v1/certify", json=request), client.get("/v1/jobs/abc")):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_unavailable"
        assert client.get("/readyz").status_code == 503
        families = scrape(client)
    assert "hycas_http_requests" in families
    assert "hycas_queue_length" not in families
