"""Clients that hang up mid-upload, stall, or hold connections, against a real ``hycas serve``
on loopback with raw sockets (an in-process client cannot stall or half-send a body)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.gateway_process import GatewayProcess

UPLOAD_TIMEOUT_SECONDS = 1.0
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    process = GatewayProcess(
        log,
        upload_timeout_seconds=str(UPLOAD_TIMEOUT_SECONDS),
        max_connections=str(MAX_CONNECTIONS),
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _partial_upload(gateway: GatewayProcess, declared: int = 100_000) -> socket.socket:
    """A connection that sent the headers and the first 1,000 bytes of a multipart body."""
    connection = gateway.connect()
    head = (
        "POST /v1/certify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    connection.sendall(head.encode() + b"--xyz\r\n" + b"a" * 993)
    return connection


def _read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response; the body is read until the server closes."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _request_counts(gateway: GatewayProcess) -> dict[str, float]:
    status, body = gateway.get("/metrics")
    assert status == 200
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "hycas_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels["status"]
                    counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_a_client_hanging_up_mid_body_is_a_499_logged_in_one_line_without_traceback(gateway):
    before = _request_counts(gateway).get("499", 0.0)
    for _ in range(5):
        _partial_upload(gateway).close()
    deadline = time.monotonic() + 10
    while _request_counts(gateway).get("499", 0.0) < before + 5:
        assert time.monotonic() < deadline, (_request_counts(gateway), gateway.log()[-3000:])
        time.sleep(0.1)
    counts = _request_counts(gateway)
    assert "500" not in counts, counts
    log = gateway.log()
    assert "Traceback" not in log, log[-3000:]
    assert "level=ERROR" not in log, log[-3000:]
    disconnects = [line for line in log.splitlines() if "event=client_disconnected" in line]
    assert len(disconnects) >= 5, log[-3000:]
    assert all("level=INFO" in line for line in disconnects)


def test_a_body_that_stalls_is_answered_408_and_the_connection_closed(gateway):
    connection = _partial_upload(gateway)
    started = time.monotonic()
    status, headers, body = _read_response(connection)  # returns once the server closes
    connection.close()
    assert status == 408
    assert headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < UPLOAD_TIMEOUT_SECONDS + 8


def test_connections_beyond_the_cap_are_refused_until_the_stalled_ones_time_out(gateway):
    """uvicorn counts open connections, idle ones included: with the cap reached by stalled
    uploads, a new request is refused at once; every stalled one is answered (408, or 503
    when it was itself past the cap as it arrived) and closed; then the server serves again."""
    stalled = [_partial_upload(gateway) for _ in range(MAX_CONNECTIONS)]
    try:
        status, _ = gateway.get("/healthz")
        assert status == 503
        statuses = [_read_response(connection)[0] for connection in stalled]
    finally:
        for connection in stalled:
            connection.close()
    assert set(statuses) <= {408, 503}, statuses
    deadline = time.monotonic() + 10
    while gateway.get("/healthz")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
