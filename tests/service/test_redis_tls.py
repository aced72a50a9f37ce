"""``rediss://``: the gateway's store, its Celery dispatch and a worker's Celery connections
over TLS to a private ``redis-server`` (TLS only, a password, a test CA made by openssl)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.main import create_app
from tests.service.gateway_process import free_port
from tests.workers.conftest import distributed_settings
from tests.workers.small_models import SMALL_MODEL_ID, SmallModelSource
from workers.app import create_celery_app
from workers.store import RedisJobStore

PASSWORD = "tls-test-password"

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("redis-server") is None,
    reason="needs openssl and redis-server",
)


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _certificates(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 signed by it; the CA's path."""
    _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=hycas-test-ca")  # fmt: skip
    _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey",
             "ca.key", "-CAcreateserial", "-days", "2", "-out", "server.pem",
             "-extfile", "san.cnf")  # fmt: skip
    return directory / "ca.pem"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca = _certificates(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            password=PASSWORD,
            ssl=True,
            ssl_ca_certs=str(ca),
            socket_timeout=2,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the TLS redis-server did not start"
                time.sleep(0.1)
        yield port, ca
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_gateway_and_celery_reach_a_rediss_url_with_its_ca(tls_redis):
    port, ca = tls_redis
    settings = distributed_settings(
        "hycas-tls:", redis_url=f"rediss://:{PASSWORD}@127.0.0.1:{port}/0", redis_ca_file=ca
    )
    with TestClient(create_app(settings, SmallModelSource())) as client:
        request = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist(), "n": 100}
        response = client.post("/v1/certify", json=request)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
    store = RedisJobStore.from_settings(settings)
    assert store.get_job(job_id) is not None
    assert store.client.llen(settings.queue_name) == 1  # the message went over TLS too

    worker_app = create_celery_app(settings)  # what `hycas worker` connects with
    try:
        with worker_app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
        assert worker_app.backend.client.ping()
    finally:
        worker_app.close()


def test_a_rediss_url_whose_certificate_is_not_trusted_is_refused(tls_redis):
    port, _ = tls_redis
    settings = distributed_settings(
        "hycas-tls:", redis_url=f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    )
    with TestClient(create_app(settings, SmallModelSource())) as client:
        request = {"model": SMALL_MODEL_ID, "image": np.full((8, 8), 0.5).tolist()}
        response = client.post("/v1/certify", json=request)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
