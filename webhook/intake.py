"""Durably record a verified event: one Redis round trip, plus an enqueue when needed.

The RECORD script dedupes on the Svix message id, invalidates the affected keys
(so revocation holds the moment we answer 2xx, worker or no worker) and adds the
users to the pending-refresh set. Only the first event of a burst enqueues an RQ
job; that one job drains every pending user, so bursts coalesce.

Jobs are enqueued by dotted path through the worker's queue module (`worker.queue`), which
imports none of the job's code.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError

from cache.config import DEFAULT_RETRY_INTERVALS
from cache.protocol import Protocol, Recorded, Target
from worker.queue import enqueue_drain, refresh_queue


class Intake:
    def __init__(self, redis: Redis, retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS) -> None:
        self._protocol = Protocol(redis)
        self._queue = refresh_queue(redis)
        self._retry_intervals = retry_intervals

    def record(self, svix_id: str, targets: Sequence[Target]) -> Recorded:
        """Raises RedisError if the event could not be recorded (answer 503: Svix retries)."""
        recorded = self._protocol.record(targets, svix_id)
        if recorded.schedule_drain:
            try:
                enqueue_drain(self._queue, self._retry_intervals)
            except RedisError:
                try:
                    self._protocol.forget(svix_id)
                finally:
                    raise
        return recorded
