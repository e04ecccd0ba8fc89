"""The intake as a Flask extension: what the routes need, built once per app from the settings.

As in Flask's tutorial, `init_app` only stores the extension on the app; `create_app`
registers the routes' blueprint, and the routes reach the extension through `current_intake`.
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app
from redis import Redis

from cache.config import Settings
from cache.connections import RedisTarget, intake_redis
from cache.durability import ReplicaWait, WaitPolicy
from webhook.intake import EventRecorder
from webhook.verify import SignatureVerifier

EXTENSION_KEY = "clerk_org_cache"


class WebhookIntake:
    """Holds the intake's Redis client, signature verifier and event recorder for one app."""

    def __init__(self, settings: Settings, *, redis: Redis | None = None) -> None:
        self.redis = redis if redis is not None else intake_redis(RedisTarget.from_settings(settings))
        self.verifier = SignatureVerifier(settings.webhook_signing_secrets)
        durable = ReplicaWait(WaitPolicy.from_settings(settings))
        self.recorder = EventRecorder(self.redis, settings.refresh_retry_intervals, durable)
        self._metrics_token = settings.metrics_token

    def __repr__(self) -> str:  # never show the secrets
        return f"WebhookIntake({self.verifier!r})"

    def init_app(self, app: Flask) -> None:
        """Store the extension on the app, for `current_intake`; the blueprint is registered by `create_app`."""
        app.extensions[EXTENSION_KEY] = self

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
    """The extension of the app handling the current request."""
    intake: WebhookIntake = current_app.extensions[EXTENSION_KEY]
    return intake
