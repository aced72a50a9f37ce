"""``GET /``: the page for certifying one image by hand; its script and style under ``/web``.

The files live in ``service/web`` (package data) and load nothing from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB_DIRECTORY = Path(__file__).resolve().parents[2] / "web"
"""``index.html``, ``app.js`` and ``style.css``: plain files, no build step."""
WEB_URL = "/web"

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(WEB_DIRECTORY / "index.html", media_type="text/html")
