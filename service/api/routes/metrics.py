"""``GET /metrics``: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from service.api.deps import RuntimeDep
from service.metrics import render_metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    body = await run_in_threadpool(render_metrics, runtime.dispatcher)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
