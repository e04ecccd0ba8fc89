"""The web process's logging: every line logged while serving a request carries its id."""

from __future__ import annotations

import logging
from typing import Any

from flask import g, has_request_context

from cache.config import Settings
from service.logs import logging_dict


class RequestIdFilter(logging.Filter):
    """Stamps every record logged while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return True


def web_logging_dict(settings: Settings) -> dict[str, Any]:
    """The web process's logging config: ours at start-up, and gunicorn's ``logconfig_dict`` after."""
    return logging_dict(settings, filters={"request_id": f"{__name__}.RequestIdFilter"})
