"""Prometheus metrics, one place for every name (prometheus-client, no hand-written format).

Cache metrics count in whatever process imports ``cache``; the web process runs
prometheus-client's multiprocess mode under gunicorn (``python -m webhook`` sets
``PROMETHEUS_MULTIPROC_DIR``), and the worker serves its own registry on
``WORKER_METRICS_PORT``.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# cache/ (any process that looks memberships up)
LOOKUPS = Counter("clerk_org_cache_lookups", "Membership lookups by result", ["result"])
CLERK_REQUESTS = Histogram(
    "clerk_org_cache_clerk_request_seconds", "Clerk Backend API request latency", buckets=LATENCY_BUCKETS
)
CLERK_RESPONSES = Counter("clerk_org_cache_clerk_responses", "Clerk answers by HTTP status", ["status"])
FILLS = Counter(
    "clerk_org_cache_fills", "Values offered to Redis, by outcome (refused: an invalidation won)", ["outcome"]
)
SINGLE_FLIGHT_WAITS = Counter(
    "clerk_org_cache_single_flight_waits", "Misses that waited for another caller's fill, by outcome", ["outcome"]
)

# webhook/
EVENTS = Counter("clerk_org_cache_events", "Webhook deliveries by event type and outcome", ["type", "outcome"])
INTAKE_SECONDS = Histogram(
    "clerk_org_cache_intake_seconds", "Time to answer a webhook delivery", buckets=LATENCY_BUCKETS
)

# worker/
JOBS = Counter("clerk_org_cache_jobs", "Worker jobs by kind and outcome", ["kind", "outcome"])
JOB_SECONDS = Histogram("clerk_org_cache_job_seconds", "Worker job duration", ["kind"], buckets=LATENCY_BUCKETS)
REFRESHES = Counter("clerk_org_cache_refreshes", "Users handled by the worker, by outcome", ["outcome"])


def render() -> tuple[bytes, str]:
    """The exposition for this process, or for all gunicorn workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
