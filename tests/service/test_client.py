"""``service.client`` against a real ``hycas serve`` (embedded mode, the shipped digits model):
PNG and DICOM certified, a job cancelled, a 429 retried until it passes, a 422 raised with its
code, ``hycas certify --server``; with -m slow, a batch of 20 at concurrency 4 and an attack read
apart from the certificates."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from service.client import APIError, AsyncClient, Client, JobFailed
from tests.service.conftest import png_bytes
from tests.service.gateway_process import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "examples" / "digit.png"
MODEL = "digits-hycas"


@pytest.fixture
def client(live_gateway: GatewayProcess):
    with Client(live_gateway.url, poll_interval=0.05) as client:
        yield client


def test_certifies_a_png_and_reports_the_services_radii_unchanged(client):
    result = client.certify(DIGIT, MODEL, n=500, seed=7)
    assert result.prediction.class_name == "6"
    assert set(result.certificates) == {"smoothing", "margin"}
    raw = result.raw["certificates"]
    for name, certificate in result.certificates.items():
        # The typed result never rounds or rescales a radius: it is the service's, bit for bit.
        assert certificate.radius == raw[name]["radius"] > 0
        assert certificate.guarantee == raw[name]["guarantee"]
        assert "L2" in certificate.guarantee
    assert result.input_shape == (1, 8, 8)
    assert result.raw["input"]["sha256"] == hashlib.sha256(DIGIT.read_bytes()).hexdigest()


def test_certifies_a_dicom_through_its_rescale(client):
    path = get_testdata_file("CT_small.dcm")
    result = client.certify(path, MODEL, n=200, methods=["margin", "smoothing"])
    assert result.raw["input"]["format"] == "dicom"
    assert result.raw["input"]["modality"] == "CT"
    assert any("rescale" in step for step in result.raw["input"]["transforms"])
    assert list(result.certificates) == ["margin", "smoothing"]
    assert result.warnings  # a CT slice is not a handwritten digit, and the result says so


def test_cancels_a_running_job(client):
    job = client.submit(DIGIT, MODEL, n=200_000, batch_size=500, methods="smoothing")
    client.cancel(job.id)
    finished = client.wait(job.id, timeout=30)
    assert finished.status == "cancelled"
    assert finished.result is None
    assert JobFailed(finished).code == "cancelled"


def test_a_full_backlog_is_retried_until_the_job_is_admitted(client, caplog):
    # The gateway admits one unfinished job: while this one runs, the next submission is 429.
    running = client.submit(DIGIT, MODEL, n=2000, methods="smoothing")
    with caplog.at_level(logging.INFO, logger="service.client"):
        result = client.certify(DIGIT, MODEL, n=200, methods="margin")
    retries = [r.getMessage() for r in caplog.records if "event=retry" in r.getMessage()]
    assert retries and all("status=429" in message for message in retries), retries
    assert client.wait(running.id, timeout=30).status == "succeeded"
    assert result.certificates["margin"].radius > 0


def test_a_refusal_is_raised_with_the_apis_status_code_and_message(client):
    with pytest.raises(APIError) as refused:
        client.certify(DIGIT, MODEL, sigma=0.3)
    assert refused.value.status == 422
    assert refused.value.code == "unsupported_sigma"
    assert "0.25" in refused.value.message
    with pytest.raises(APIError) as unknown:
        client.submit(b"plain text, no image", MODEL)
    assert 400 <= unknown.value.status < 500 and unknown.value.code != "internal_error"


def test_the_async_client_certifies_and_refuses_as_the_client_does(live_gateway):
    async def run() -> tuple[list, APIError]:
        async with AsyncClient(live_gateway.url, poll_interval=0.05) as client:
            # One job at a time: the shared gateway admits one unfinished job.
            outcomes = await client.certify_batch(
                [DIGIT, DIGIT.read_bytes()], MODEL, concurrency=1, seed=3, methods="margin"
            )
            with pytest.raises(APIError) as refused:
                await client.submit(DIGIT, MODEL, sigma=0.3)
            return outcomes, refused.value

    outcomes, refused = asyncio.run(run())
    assert [o.prediction.class_name for o in outcomes] == ["6", "6"]
    assert outcomes[0].certificates["margin"].radius == outcomes[1].certificates["margin"].radius
    assert (refused.status, refused.code) == (422, "unsupported_sigma")


@pytest.mark.slow
def test_a_batch_of_twenty_at_concurrency_four(tmp_path):
    gateway = GatewayProcess(tmp_path / "gateway.log", default_n="500")
    try:
        gateway.wait_ready()
        images = [png_bytes(size=(8, 8), seed=seed) for seed in range(20)]
        with Client(gateway.url, poll_interval=0.05) as client:
            outcomes = client.certify_batch(images, MODEL, concurrency=4, methods="smoothing")
    finally:
        gateway.stop()
    assert len(outcomes) == 20
    for image, outcome in zip(images, outcomes, strict=True):
        assert not isinstance(outcome, Exception), outcome
        # In the order given: each result is about its own image.
        assert outcome.raw["input"]["sha256"] == hashlib.sha256(image).hexdigest()


def test_hycas_certify_with_server_prints_the_services_result(live_gateway, capsys):
    from service.cli import main

    argv = ["certify", str(DIGIT), "--model", MODEL, "--server", live_gateway.url, "--n", "200"]
    assert main([*argv, "--seed", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["provenance"]["seed"] == "3"
    assert report["input"]["sha256"] == hashlib.sha256(DIGIT.read_bytes()).hexdigest()
    assert main([*argv, "--methods", "margin"]) == 0
    printed = capsys.readouterr().out
    assert "prediction 6 (6)" in printed and "margin" in printed
    assert main([*argv, "--sigma", "0.3"]) == 2
    assert "(422 unsupported_sigma)" in capsys.readouterr().err


@pytest.mark.slow
def test_an_attack_is_read_apart_from_the_certificates_and_never_beats_them(client):
    result = client.certify(DIGIT, MODEL, n=500, seed=5, methods="smoothing,margin,attack")
    assert set(result.certificates) == {"smoothing", "margin"}
    assert {finding.classifier for finding in result.attacks} == {"smoothed", "frozen_ensemble"}
    by_classifier = {c.classifier: c for c in result.certificates.values()}
    for finding in result.attacks:
        # Another answer found at distance D: no certificate of that classifier may claim more.
        if finding.distance is not None:
            assert by_classifier[finding.classifier].radius <= finding.distance
    assert result.brackets and all("≤" in sentence for sentence in result.brackets)
