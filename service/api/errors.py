"""The one place that turns exceptions into JSON responses.

A request the service cannot serve gets ``{"error": {"code", "message"}}`` with a 4xx status
and a message a person can act on; only an unexpected exception (a bug) becomes a 500. The
exceptions themselves (statuses and codes) are in :mod:`service.errors`.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from service.errors import (
    InvalidRequest,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    TooManyRequests,
)

logger = logging.getLogger(__name__)


CLIENT_CLOSED_REQUEST = 499
"""The status recorded (never sent) when a client hangs up before its request was read."""


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={"error": {"code": code, "message": message}},
        headers=headers,
    )


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """The methods some route serves on the request's path (for ``Allow``), all routes asked."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def _describe_validation_errors(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{location or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is invalid"


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the JSON error shape: here and nowhere else."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        headers = {"Connection": "close"} if isinstance(error, RequestTimeout) else None
        if isinstance(error, TooManyRequests):
            headers = {"Retry-After": str(error.retry_after)}
        return error_response(error.status_code, error.code, error.message, headers)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, _: ClientDisconnect) -> Response:
        # The client hung up mid-body: nobody reads this answer; it is counted, not an error.
        logger.info("event=client_disconnected method=%s path=%s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, InvalidRequest.code, _describe_validation_errors(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
        headers = dict(error.headers or {})
        message = str(error.detail)
        if error.status_code == 405:
            headers["Allow"] = allowed_methods(request)
            message = f"{request.method} is not served on this path; use {headers['Allow']}"
        return error_response(error.status_code, code, message, headers or None)

    @app.exception_handler(redis.RedisError)
    async def store_unavailable(request: Request, error: redis.RedisError) -> JSONResponse:
        # Not the caller's fault and not a bug: the job store is down or unreachable.
        logger.error(
            "event=store_unavailable method=%s path=%s error=%s",
            request.method,
            request.url.path,
            type(error).__name__,
        )
        return error_response(
            ServiceUnavailable.status_code,
            "store_unavailable",
            "the job store (Redis) cannot be reached; retry in a moment",
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.error(
            "event=unhandled_error method=%s path=%s error=%s",
            request.method,
            request.url.path,
            type(error).__name__,
            exc_info=error,
        )
        return error_response(500, "internal_error", "an unexpected error occurred")
