"""Logging for the service's processes: one JSON object per line (``LOG_FORMAT=text`` for humans).

One `logging.config.dictConfig` dictionary serves both our own set-up and gunicorn's
``logconfig_dict``, so filters declared here (the web process's request id) survive
gunicorn configuring its logging. Structured fields come from ``extra=``; only the
names in `FIELDS` are emitted, so a payload, a signature or a secret can never ride
along by accident.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from cache.config import Settings

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
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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


def logging_dict(settings: Settings, *, filters: dict[str, str] | None = None) -> dict[str, Any]:
    """Every logger (ours, RQ's, gunicorn's) through one stderr handler in the configured format.

    ``filters`` maps a name to the dotted path of a `logging.Filter` class attached to
    that handler, e.g. the web process's request-id filter.
    """
    formatter: dict[str, Any] = (
        {"()": f"{JsonFormatter.__module__}.JsonFormatter"}
        if settings.log_format == "json"
        else {"format": TEXT_FORMAT}
    )
    handler: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
        "filters": sorted(filters or {}),
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {name: {"()": path} for name, path in (filters or {}).items()},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": settings.log_level},
        "loggers": {
            # gunicorn's own loggers do not propagate; give them the same handler
            "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def configure_logging(settings: Settings, *, filters: dict[str, str] | None = None) -> None:
    logging.config.dictConfig(logging_dict(settings, filters=filters))
