"""Every Prometheus metric of the cache library, counted in whatever process imports ``cache``.

Only what a lookup and its Clerk calls do is registered here (lookups, fills, Clerk
requests, the fleet's Clerk budget), so an app's own ``/metrics`` shows nothing of the
webhook intake or the worker (those live in `webhook.metrics` and `worker.metrics`).
`render` exposes this process's registry, or every process's under prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, as under gunicorn).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
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

# the near-cache (cache/near.py); local hits are LOOKUPS{result="near_hit"}
NEAR_KEEPS = Counter(
    "clerk_org_cache_near_keeps", "Values offered to the near-cache, by outcome (refused: an invalidation won)",
    ["outcome"],
)  # fmt: skip
NEAR_DROPS = Counter("clerk_org_cache_near_drops", "Times a near-cache emptied its whole tier, by reason", ["reason"])
NEAR_LEASE_AGE = Gauge(
    "clerk_org_cache_near_lease_age_seconds",
    "Age of the near-cache lease in force, from when its renewal was sent (-1: never registered)",
    multiprocess_mode="max",
)
NEAR_ACK_SECONDS = Histogram(
    "clerk_org_cache_near_ack_seconds", "From an invalidation's publish to each near-cache's acknowledgement",
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
NEAR_LAPSE_WAIT_SECONDS = Histogram(
    "clerk_org_cache_near_lapse_wait_seconds",
    "Time a revocation waited on near-caches that never acknowledged, until their leases ran out",
    buckets=LATENCY_BUCKETS,
)
NEAR_LAPSED = Counter("clerk_org_cache_near_lapsed", "Near-caches a revocation waited out, not acknowledged")


def render() -> tuple[bytes, str]:
    """The exposition for this process, or for all gunicorn workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
