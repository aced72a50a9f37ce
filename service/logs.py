"""Structured logs: one ``key=value`` line per event, on stderr.

Messages are written as ``event=<name> key=value ...`` by the code that logs; nothing logs
pixel values, request bodies or DICOM header values.
"""

from __future__ import annotations

import logging

from workers.config import LOG_FORMAT


def configure_logging(level: str) -> None:
    """Root logging for ``hycas serve`` and ``hycas certify`` (Celery configures its own)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
