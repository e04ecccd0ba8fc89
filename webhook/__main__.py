"""``python -m webhook``: validate the environment, then serve the app with gunicorn.

The app is built once in the master before forking, so a bad variable stops the
process with one line naming it instead of a traceback per worker.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from cache.config import Settings
from cache.errors import ConfigError
from webhook.app import create_app


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        port = Settings.from_env(need_clerk_key=False).port
        workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
        app = create_app()
    except ConfigError as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print("web: WEB_CONCURRENCY: must be a whole number", file=sys.stderr)
        return 2
    _Gunicorn(
        app,
        {
            "bind": f"0.0.0.0:{port}",
            "workers": workers,
            "worker_class": "sync",
            "timeout": 30,
            "graceful_timeout": 20,
            "accesslog": "-",
            "control_socket_disable": True,  # one fixed path per user would collide between instances
        },
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
