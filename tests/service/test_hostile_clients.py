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
CAPPED_HEADER_SECONDS = 5.0


def _serve(log: Path, **settings: str) -> Iterator[GatewayProcess]:
    settings.setdefault("upload_timeout_seconds", str(UPLOAD_TIMEOUT_SECONDS))
    process = GatewayProcess(log, **settings)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


PARSERS = ("httptools", "h11")
"""Both HTTP parsers ``hycas serve`` can run on carry the same deadlines and caps."""


@pytest.fixture(scope="module", params=PARSERS)
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    yield from _serve(log, http_parser=request.param)


@pytest.fixture(params=PARSERS)
def capped_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A server of its own (at its cap, uvicorn answers requests itself: they would never
    reach the app), with a header deadline long enough to observe the cap."""
    yield from _serve(
        tmp_path / "gateway.log",
        max_connections=str(MAX_CONNECTIONS),
        upload_timeout_seconds=str(CAPPED_HEADER_SECONDS),
        http_parser=request.param,
    )


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
    """``hycas_http_requests_total`` by status."""
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


def test_a_client_closing_after_pipelined_requests_is_a_disconnect_not_an_error(gateway):
    """Three requests in one write, one read, then a hang-up: the answers still queued behind
    the first meet a closed transport; that is the client leaving, not a server error."""
    request = b"GET /v1/defaults HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(4):
        connection = gateway.connect()
        connection.sendall(request * 3)
        connection.recv(100)
        connection.close()
    time.sleep(1.0)  # the queued answers are attempted after the hang-up
    assert gateway.get("/healthz")[0] == 200
    log = gateway.log()
    assert "Traceback" not in log, log[-3000:]
    assert "level=ERROR" not in log, log[-3000:]
    assert "500" not in _request_counts(gateway)


def test_a_body_that_stalls_is_answered_408_and_the_connection_closed(gateway):
    connection = _partial_upload(gateway)
    started = time.monotonic()
    status, headers, body = _read_response(connection)  # returns once the server closes
    connection.close()
    assert status == 408
    assert headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < UPLOAD_TIMEOUT_SECONDS + 8


def _closed_by_the_server(connection: socket.socket) -> bool:
    """Whether the server closes ``connection`` (within the socket's timeout)."""
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False


def test_a_connection_whose_headers_do_not_arrive_is_closed(gateway):
    silent = gateway.connect()
    half_headers = gateway.connect()
    half_headers.sendall(b"POST /v1/certify HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        assert _closed_by_the_server(silent)
        assert _closed_by_the_server(half_headers)
    finally:
        silent.close()
        half_headers.close()
    assert "event=header_timeout" in gateway.log()


def test_connections_beyond_the_cap_are_refused_until_the_silent_ones_are_closed(capped_gateway):
    """uvicorn counts open connections, silent ones included: with the cap reached, a new
    request is answered 503 at once; the silent ones are closed at the header deadline, and
    the server serves again."""
    silent = [capped_gateway.connect() for _ in range(MAX_CONNECTIONS - 1)]
    try:
        status, _ = capped_gateway.get("/healthz")
        assert status == 503
        assert all(_closed_by_the_server(connection) for connection in silent)
    finally:
        for connection in silent:
            connection.close()
    deadline = time.monotonic() + 10
    while capped_gateway.get("/healthz")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
