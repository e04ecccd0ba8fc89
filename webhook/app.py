"""The Flask app: Clerk's webhook intake plus health endpoints.

Build it with `create_app`; tests pass a Redis client pointed at their own
server. Every error is a small JSON body ``{"error": <stable code>, "message": ...}``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, has_request_context, jsonify, request
from redis import Redis
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from cache.config import Settings
from cache.connections import intake_redis
from cache.errors import InvalidId, WebhookRejected
from cache.metrics import EVENTS, INTAKE_SECONDS
from cache.metrics import render as render_metrics
from cache.redis_checks import risky_settings
from webhook.events import metric_type, parse_event, targets_for
from webhook.intake import Intake
from webhook.verify import SignatureVerifier

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("webhook")


def create_app(config: Mapping[str, Any] | None = None, *, redis: Redis | None = None) -> Flask:
    """Build the app from the environment, overridden by ``config`` (same variable names).

    Raises ConfigError (one line naming the variable) if the configuration is unusable.
    """
    env: dict[str, str] = dict(os.environ)
    env.update({k: str(v) for k, v in (config or {}).items()})
    settings = Settings.from_env(env, need_clerk_key=False, need_signing_secret=True)

    app = Flask(__name__)
    # One byte over the limit: a chunked body (no Content-Length) is cut there by Werkzeug, and we refuse it below.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    client = redis if redis is not None else intake_redis(settings.redis_url)
    verifier = SignatureVerifier(settings.webhook_signing_secrets)
    intake = Intake(client, settings.refresh_retry_intervals)
    for warning in risky_settings(client):
        log.warning(warning)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = _request_id(request.headers.get("X-Request-ID"))
        g.event_type, g.svix_id, g.outcome, g.target = "unknown", None, None, {}

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.request_id
        if request.path == "/webhooks/clerk":
            seconds = time.perf_counter() - g.started
            outcome = g.outcome or "rejected"
            EVENTS.labels(metric_type(g.event_type), outcome).inc()
            INTAKE_SECONDS.observe(seconds)
            log.info(
                "webhook %s",
                outcome,
                extra={
                    "request_id": g.request_id,
                    "svix_id": g.svix_id,
                    "event_type": g.event_type,
                    "outcome": outcome,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 2),
                    **g.target,
                },
            )
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, content_type=content_type)

    @app.post("/webhooks/clerk")
    def clerk_webhook() -> tuple[Response, int]:
        if request.mimetype != "application/json":
            raise WebhookRejected(415, "unsupported_media_type", "Content-Type must be application/json")
        raw = request.get_data(cache=False)
        if len(raw) > MAX_BODY_BYTES:
            raise WebhookRejected(413, "request_entity_too_large", "body over 1 MiB")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected(400, "invalid_encoding", "body is not UTF-8") from None
        g.svix_id = verifier.verify(body, request.headers.get)
        event = parse_event(body)
        g.event_type = event["type"]
        targets = targets_for(event)
        if targets is None:
            return _outcome("ignored")
        g.target = {("user_id" if t.kind in "ud" else "org_id"): t.id for t in targets}
        try:
            recorded = intake.record(g.svix_id, targets)
        except InvalidId:
            raise WebhookRejected(400, "invalid_svix_id", "svix-id is not a Svix message id") from None
        except RedisError:
            g.outcome = "failed_to_record"
            return _error(503, "unavailable", "could not record the event; retry later")
        return _outcome("duplicate" if recorded.duplicate else "processed")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(status="ok"), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        try:
            client.ping()
        except RedisError:
            return _error(503, "redis_unavailable", "Redis does not answer")
        return jsonify(status="ready"), 200

    @app.errorhandler(WebhookRejected)
    def rejected(exc: WebhookRejected) -> tuple[Response, int]:
        g.outcome = f"rejected_{exc.code}"
        return _error(exc.status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        g.outcome = f"rejected_{code}"
        return _error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        return _error(500, "internal_error", "internal error")

    return app


class RequestIdFilter(logging.Filter):
    """Stamps every record logged while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return True


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error=code, message=message), status


def _outcome(outcome: str) -> tuple[Response, int]:
    g.outcome = outcome
    return jsonify(status=outcome), 200


def _request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one."""
    if given and len(given) <= 128 and all(c.isalnum() or c in "-_." for c in given):
        return given
    return uuid.uuid4().hex
