"""``python -m webhook``: validate the environment, check the Redis, then serve the app with gunicorn.

The app is built once in the master before forking, so a bad variable stops the
process with one line naming it instead of a traceback per worker. Metrics use
prometheus-client's multiprocess mode, whose directory must be set before any
metric exists: hence the imports below the environment set-up.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="clerk-org-cache-metrics-")

import logging
import logging.config

from prometheus_client import multiprocess

from cache.config import settings_or_exit
from cache.connections import RedisTarget, Role, redis_client
from service.redis_checks import log_risky_settings
from webhook.app import create_app
from webhook.logs import web_logging_dict


def main() -> int:
    settings = settings_or_exit("web", "web")
    # only now: gunicorn's config module reads WEB_CONCURRENCY when imported, and would crash on a bad one
    from gunicorn.app.base import BaseApplication

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    logconfig = web_logging_dict(settings)
    logging.config.dictConfig(logconfig)
    app = create_app()
    log_risky_settings(redis_client(RedisTarget.from_settings(settings), Role.TOOL), logging.getLogger("webhook"))
    options = {
        "bind": f"0.0.0.0:{settings.port}",
        "workers": settings.web_concurrency,
        "worker_class": "sync",
        "timeout": 30,
        "graceful_timeout": 20,
        "control_socket_disable": True,  # one fixed path per user would collide between instances
        "child_exit": _child_exit,
        "logconfig_dict": logconfig,  # gunicorn re-applies it: the request-id filter survives
    }
    Gunicorn().run()
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    return 0


def _child_exit(server: Any, worker: Any) -> None:
    """A gunicorn worker is gone: its live gauges must not linger in the metrics."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
