"""The protocol class ``hycas serve`` runs: the parser it is built on, and its deadline."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.core.config import Settings
from service.http_protocol import header_deadline_protocol, httptools_installed


def test_auto_takes_httptools_when_installed_and_h11_on_request():
    assert httptools_installed()
    auto = header_deadline_protocol(7.0)
    assert issubclass(auto, HttpToolsProtocol) and auto.header_timeout == 7.0
    assert issubclass(header_deadline_protocol(7.0, "httptools"), HttpToolsProtocol)
    h11 = header_deadline_protocol(3.0, "h11")
    assert issubclass(h11, H11Protocol) and not issubclass(h11, HttpToolsProtocol)
    assert h11.header_timeout == 3.0


def test_an_unknown_parser_or_event_loop_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="HTTP parser"):
        header_deadline_protocol(1.0, "picohttp")
    monkeypatch.setenv("HYCAS_HTTP_PARSER", "picohttp")
    with pytest.raises(ValidationError, match="http_parser"):
        Settings()
    monkeypatch.setenv("HYCAS_HTTP_PARSER", "h11")
    monkeypatch.setenv("HYCAS_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError, match="event_loop"):
        Settings()
