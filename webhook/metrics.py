"""Metrics of the webhook intake (the web process serves them, with the lookup metrics, on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from cache.metrics import LATENCY_BUCKETS

EVENTS = Counter("clerk_org_cache_events", "Webhook deliveries by event type and outcome", ["type", "outcome"])
INTAKE_SECONDS = Histogram(
    "clerk_org_cache_intake_seconds", "Time to answer a webhook delivery", buckets=LATENCY_BUCKETS
)
