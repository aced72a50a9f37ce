"""The gateway's metrics and the ``/metrics`` exposition.

Here: HTTP requests and latency by route template and status, the queue length (read at
scrape time from the dispatcher), and one structured log line per request. Job metrics are
defined in :mod:`workers.metrics`. With ``PROMETHEUS_MULTIPROC_DIR`` set, ``/metrics``
aggregates every process writing to that folder (gateway workers, Celery workers on the
same host); otherwise it shows this process.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.dispatch import JobDispatcher

logger = logging.getLogger("service.access")

HTTP_REQUESTS = Counter(
    "hycas_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "hycas_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MODEL_CHANGES = Counter(
    "hycas_model_changes",
    "Changes of the model repository asked by admin keys, by action (register, retire) and "
    "outcome (accepted; refused: a check failed; conflict: the version exists).",
    ["action", "outcome"],
)


#: Methods recorded by name; any other is recorded as ``other``, so that a client cannot
#: create new label values (series) at will.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The ``method`` label of a request: its name when standard, else ``other``."""
    return method if method in KNOWN_METHODS else "other"


class QueueLengthCollector(Collector):
    """``hycas_queue_length``: jobs waiting for a worker, asked of the dispatcher at scrape."""

    def __init__(self, dispatcher: JobDispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        try:
            length = self.dispatcher.queue_length()
        except Exception as error:
            # The broker is unreachable: the scrape still serves every other metric.
            logger.warning("event=queue_length_unavailable error=%s", type(error).__name__)
            return
        gauge = GaugeMetricFamily(
            "hycas_queue_length", "Jobs dispatched and not yet started by a worker."
        )
        gauge.add_metric([], float(length))
        yield gauge


def render_metrics(dispatcher: JobDispatcher) -> bytes:
    """The Prometheus text exposition of this process (or of the multiprocess folder)."""
    queue_registry = CollectorRegistry(auto_describe=False)
    queue_registry.register(QueueLengthCollector(dispatcher))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(queue_registry)


class RequestMetricsMiddleware:
    """Counts, times and logs each HTTP request by its route template (never its body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = method_label(scope["method"])
            labels = {"route": template, "method": method, "status": str(status)}
            HTTP_REQUESTS.labels(**labels).inc()
            HTTP_REQUEST_DURATION.labels(**labels).observe(elapsed)
            logger.info(
                "event=http_request method=%s route=%s status=%d seconds=%.4f",
                method,
                template,
                status,
                elapsed,
            )
