"""The app factory: it reads the settings, stores the intake extension and registers the routes; nothing else.

Tests pass a Redis client pointed at their own server. Start-up checks of the Redis
and logging set-up belong to the process (``python -m webhook``), not to the factory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from redis import Redis

from cache.config import Settings
from webhook.extension import WebhookIntake
from webhook.routes import MAX_BODY_BYTES, blueprint


def create_app(config: Mapping[str, Any] | None = None, *, redis: Redis | None = None) -> Flask:
    """Build the app from the environment, overridden by ``config`` (same variable names).

    Raises ConfigError (one line naming the variable) if the configuration is unusable.
    """
    env: dict[str, str] = dict(os.environ)
    env.update({k: str(v) for k, v in (config or {}).items()})
    settings = Settings.from_env(env, process="web")
    app = Flask(__name__)
    # One byte over the limit: a chunked body (no Content-Length) is cut there by Werkzeug, and the route refuses it.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    WebhookIntake(settings, redis=redis).init_app(app)
    app.register_blueprint(blueprint)
    return app
