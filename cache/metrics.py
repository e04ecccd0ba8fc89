"""Every Prometheus metric of the cache library, counted in whatever process imports ``cache``.

Only what a lookup and its Clerk calls do is registered here (lookups, fills, Clerk
requests, the fleet's Clerk budget), so an app's own ``/metrics`` shows nothing of the
webhook intake or the worker (those live in `webhook.metrics` and `worker.metrics`).
`render` exposes this process's registry, or every process's under prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, as under gunicorn).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

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
BUDGET = Counter("clerk_org_cache_clerk_budget", "Clerk budget requests by class and outcome", ["priority", "outcome"])
BUDGET_WAIT = Histogram(
    "clerk_org_cache_clerk_budget_wait_seconds", "Time spent waiting for Clerk budget", ["priority"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
PAUSES = Counter("clerk_org_cache_clerk_pauses", "429s from Clerk that paused every process")


def render() -> tuple[bytes, str]:
    """The exposition for this process, or for all gunicorn workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
