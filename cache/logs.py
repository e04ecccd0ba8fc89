"""Logging for every process: one JSON object per line (``LOG_FORMAT=text`` for humans).

Structured fields come from ``extra=``; only the names below are emitted, so a
payload, a signature or a secret can never ride along by accident.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

FIELDS = (
    "request_id",
    "svix_id",
    "event_type",
    "user_id",
    "org_id",
    "outcome",
    "duration_ms",
    "status",
    "error",
    "refreshed",
    "patched",
    "skipped",
    "failed",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def json_logs() -> bool:
    return os.environ.get("LOG_FORMAT", "json").strip().lower() != "text"


def configure_logging() -> None:
    """Route every logger (ours, RQ's, gunicorn's via `gunicorn_logconfig`) through one handler."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs():
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


def gunicorn_logconfig() -> dict[str, Any] | None:
    """gunicorn's own log lines in the same JSON format (None: gunicorn's defaults)."""
    if not json_logs():
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "cache.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
