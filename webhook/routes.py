"""The routes: Clerk's webhook intake, health checks and metrics.

Every error is a small JSON body ``{"error": <stable code>, "message": ...}``.
"""

from __future__ import annotations

import logging
import time
import uuid

from flask import Blueprint, Response, g, jsonify, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from cache.durability import NotReplicated
from cache.errors import InvalidId
from cache.metrics import render as render_metrics
from webhook.errors import WebhookRejected
from webhook.events import metric_type, parse_event, targets_for
from webhook.extension import current_intake
from webhook.metrics import EVENTS, INTAKE_SECONDS

MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_PATH = "/webhooks/clerk"
log = logging.getLogger("webhook")
blueprint = Blueprint("clerk_org_cache", __name__)


@blueprint.before_app_request
def start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = _request_id(request.headers.get("X-Request-ID"))
    g.event_type, g.svix_id, g.outcome, g.target = "unknown", None, None, {}


@blueprint.after_app_request
def finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.request_id
    if request.path == WEBHOOK_PATH:
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


_TARGET_LOG_FIELD = {
    "u": "user_id",
    "d": "user_id",
    "o": "org_id",
    "x": "org_id",
    "m": "org_id",
    "r": "role",
    "R": "role",
}


@blueprint.post(WEBHOOK_PATH)
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
    intake = current_intake()
    g.svix_id = intake.verifier.verify(body, request.headers.get)
    event = parse_event(body)
    g.event_type = event["type"]
    targets = targets_for(event)
    if targets is None:
        return _outcome("ignored")
    g.target = {_TARGET_LOG_FIELD[t.kind]: t.id for t in targets}
    try:
        recorded = intake.recorder.record_event(g.svix_id, targets)
    except InvalidId:
        raise WebhookRejected(400, "invalid_svix_id", "svix-id is not a Svix message id") from None
    except (RedisError, NotReplicated) as exc:
        log.warning(
            "could not record the event in Redis (%s: %s); answering 503 so Svix retries", type(exc).__name__, exc
        )
        g.outcome = "failed_to_record"
        return _error(503, "unavailable", "could not record the event; retry later")
    return _outcome("duplicate" if recorded.duplicate else "processed")


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(status="ok"), 200


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        current_intake().redis.ping()
    except RedisError:
        return _error(503, "redis_unavailable", "Redis does not answer")
    return jsonify(status="ready"), 200


@blueprint.get("/metrics")
def metrics() -> Response | tuple[Response, int]:
    """Only with ``Authorization: Bearer $METRICS_TOKEN``; without METRICS_TOKEN the path does not exist."""
    intake = current_intake()
    if not intake.metrics_enabled:
        return _error(404, "not_found", "not found")
    if not intake.metrics_authorized(request.headers.get("Authorization")):
        response, status = _error(401, "unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, status
    body, content_type = render_metrics()
    return Response(body, content_type=content_type)


@blueprint.app_errorhandler(WebhookRejected)
def rejected(exc: WebhookRejected) -> tuple[Response, int]:
    g.outcome = f"rejected_{exc.code}"
    return _error(exc.status, exc.code, str(exc))


@blueprint.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> tuple[Response, int]:
    code = (exc.name or "error").lower().replace(" ", "_")
    g.outcome = f"rejected_{code}"
    return _error(exc.code or 500, code, exc.description or exc.name)


@blueprint.app_errorhandler(Exception)
def unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("unexpected error")
    return _error(500, "internal_error", "internal error")


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
