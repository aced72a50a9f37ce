"""uvicorn's HTTP/1.1 protocols with a deadline on each request's line and headers.

uvicorn closes an idle keep-alive connection after a response, but waits forever for the
first request of a new connection and for headers that stop half-way; each such connection
counts against its connection cap (``limit_concurrency``), so a few hundred silent sockets
would lock every client out. Here the request line and headers must arrive within
``header_timeout`` seconds of the connection opening (or of the previous response);
otherwise the connection is closed. The body has its own deadline, kept by the app (408).

Two parsers carry it: ``httptools`` (llhttp, in C: the default when it is installed) and
``h11`` (pure Python, always there). They differ in speed only; the tests run both. The
httptools one also marks every unanswered request of a connection as disconnected when the
client hangs up, not only the newest: pipelined answers are then dropped, not written to the
closed transport (an error and a traceback on uvloop).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("service.access")

HTTP_PARSERS = ("auto", "httptools", "h11")
"""The values of ``HYCAS_HTTP_PARSER``: ``auto`` takes httptools when it is installed."""


class _HeaderDeadline:
    """The deadline, for a uvicorn protocol class (``transport``, ``loop``, ``cycle``)."""

    header_timeout: float = 60.0
    _header_deadline: asyncio.TimerHandle | None = None
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self._waiting_for_a_request():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _waiting_for_a_request(self) -> bool:
        return not self.transport.is_closing() and (
            self.cycle is None or self.cycle.response_complete
        )

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self._waiting_for_a_request():
            logger.info("event=header_timeout seconds=%g", self.header_timeout)
            self.transport.close()


class HeaderDeadlineProtocol(_HeaderDeadline, H11Protocol):
    """:class:`H11Protocol` that closes a connection whose next request's headers are late."""

    def handle_events(self) -> None:
        previous = self.cycle
        super().handle_events()
        if self.cycle is not previous:  # a request's headers arrived: the app has it now
            self._disarm_header_deadline()


def _httptools_protocol() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderDeadlineProtocol(_HeaderDeadline, HttpToolsProtocol):
        """:class:`HttpToolsProtocol` that closes a connection whose next request's headers
        are late."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._cycles: list[Any] = []
            """The requests of this connection whose answer is not complete."""
            super().connection_made(transport)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._disarm_header_deadline()  # the app has the request (or it is queued)
            self._cycles = [c for c in self._cycles if not c.response_complete]
            self._cycles.append(self.cycle)

        def connection_lost(self, exc: Exception | None) -> None:
            # uvicorn marks only the newest request's cycle as disconnected; with pipelined
            # requests, the one running and those queued would write their answers to the
            # closed transport (a RuntimeError on uvloop, logged as a server error).
            for cycle in self._cycles:
                if not cycle.response_complete:
                    cycle.disconnected = True
            super().connection_lost(exc)

    return HttpToolsHeaderDeadlineProtocol


def httptools_installed() -> bool:
    return importlib.util.find_spec("httptools") is not None


def header_deadline_protocol(header_timeout: float, parser: str = "auto") -> type:
    """The protocol class for ``uvicorn.run(http=...)`` with this deadline on headers, on the
    ``parser`` of :data:`HTTP_PARSERS` (``auto``: httptools when installed, else h11)."""
    if parser not in HTTP_PARSERS:
        raise ValueError(f"HTTP parser must be one of {', '.join(HTTP_PARSERS)}, got {parser!r}")
    if parser == "httptools" and not httptools_installed():
        raise RuntimeError("HYCAS_HTTP_PARSER=httptools, but httptools is not installed")
    use_httptools = parser == "httptools" or (parser == "auto" and httptools_installed())
    base = _httptools_protocol() if use_httptools else HeaderDeadlineProtocol
    return type(base.__name__, (base,), {"header_timeout": header_timeout})
