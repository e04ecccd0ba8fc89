"""The intake as a Flask extension: what the routes need, built once per app from the settings."""

from __future__ import annotations

import hmac

from flask import Flask, current_app
from redis import Redis

from cache.config import Settings
from cache.connections import RedisTarget, intake_redis
from cache.durability import ReplicaWait, WaitPolicy
from webhook.intake import Intake
from webhook.verify import SignatureVerifier

EXTENSION_KEY = "clerk_org_cache"


class WebhookIntake:
    """Holds the intake's Redis client, signature verifier and recorder; `init_app` wires the routes."""

    def __init__(self, settings: Settings, *, redis: Redis | None = None) -> None:
        self.redis = redis if redis is not None else intake_redis(RedisTarget.from_settings(settings))
        self.verifier = SignatureVerifier(settings.webhook_signing_secrets)
        durable = ReplicaWait(WaitPolicy.from_settings(settings))
        self.intake = Intake(self.redis, settings.refresh_retry_intervals, durable)
        self._metrics_token = settings.metrics_token

    def __repr__(self) -> str:  # never show the secrets
        return f"WebhookIntake({self.verifier!r})"

    def init_app(self, app: Flask) -> None:
        from webhook.routes import blueprint

        app.extensions[EXTENSION_KEY] = self
        app.register_blueprint(blueprint)

    @property
    def metrics_enabled(self) -> bool:
        return bool(self._metrics_token)

    def metrics_authorized(self, authorization: str | None) -> bool:
        """True for ``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time)."""
        scheme, _, token = (authorization or "").partition(" ")
        return (
            self.metrics_enabled
            and scheme.lower() == "bearer"
            and hmac.compare_digest(token.strip().encode(), self._metrics_token.encode())
        )


def current_intake() -> WebhookIntake:
    intake: WebhookIntake = current_app.extensions[EXTENSION_KEY]
    return intake
