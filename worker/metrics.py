"""Metrics of the drain jobs (served on WORKER_METRICS_PORT with the lookup and queue metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from cache.metrics import LATENCY_BUCKETS

JOBS = Counter("clerk_org_cache_jobs", "Worker jobs by kind and outcome", ["kind", "outcome"])
JOB_SECONDS = Histogram("clerk_org_cache_job_seconds", "Worker job duration", ["kind"], buckets=LATENCY_BUCKETS)
REFRESHES = Counter("clerk_org_cache_refreshes", "Users handled by the worker, by outcome", ["outcome"])
