"""uvicorn's HTTP/1.1 protocol with a deadline on each request's line and headers.

uvicorn closes an idle keep-alive connection after a response, but waits forever for the
first request of a new connection and for headers that stop half-way; each such connection
counts against its connection cap (``limit_concurrency``), so a few hundred silent sockets
would lock every client out. Here the request line and headers must arrive within
``header_timeout`` seconds of the connection opening (or of the previous response);
otherwise the connection is closed. The body has its own deadline, kept by the app (408).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("service.access")


class HeaderDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose next request's headers are late."""

    header_timeout: float = 60.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def handle_events(self) -> None:
        previous = self.cycle
        super().handle_events()
        if self.cycle is not previous:  # a request's headers arrived: the app has it now
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._waiting_for_a_request():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

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


def header_deadline_protocol(header_timeout: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with this deadline on headers."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout}
    )
