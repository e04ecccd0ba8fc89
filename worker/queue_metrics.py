"""Queue depth and the age of the oldest waiting job, read from Redis at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import FailedJobRegistry

from cache import contract


class QueueCollector(Collector):
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue = Queue(contract.QUEUE_NAME, connection=redis)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            queued = self._queue.count
            pending = self._redis.scard(contract.PENDING_REFRESH_KEY)
            org_patches = self._redis.scard(contract.ORG_PATCHES_KEY)
            failed = FailedJobRegistry(queue=self._queue).count
            oldest = self._oldest_age()
        except RedisError:
            return
        depth = GaugeMetricFamily("clerk_org_cache_queue_depth", "Work waiting for the worker", labels=["what"])
        depth.add_metric(["rq_jobs"], queued)
        depth.add_metric(["users_to_refresh"], pending)
        depth.add_metric(["org_patches"], org_patches)
        depth.add_metric(["failed_jobs"], failed)
        yield depth
        yield GaugeMetricFamily(
            "clerk_org_cache_oldest_job_age_seconds", "Age of the oldest queued RQ job (0: none)", value=oldest
        )

    def _oldest_age(self) -> float:
        job_ids = self._queue.get_job_ids(0, 0)
        if not job_ids:
            return 0.0
        job = self._queue.fetch_job(job_ids[0])
        if job is None or job.enqueued_at is None:
            return 0.0
        enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - enqueued).total_seconds())
