"""Durably record a verified event: one Redis round trip, plus an enqueue when needed.

The RECORD script dedupes on the Svix message id, invalidates the affected keys
(so revocation holds the moment we answer 2xx, worker or no worker) and adds the
users to the pending-refresh set. Only the first event of a burst enqueues an RQ
job; that one job drains every pending user, so bursts coalesce.

Jobs are enqueued by dotted path through the worker's queue module (`worker.queue`), which
imports none of the job's code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache.config import DEFAULT_RETRY_INTERVALS
from cache.durability import NotReplicated, ReplicaWait
from cache.io import SyncIO
from cache.near import observe_near
from cache.protocol import (
    NearRegistry,
    Recorded,
    ScriptSupport,
    Target,
    forget_call,
    near_invalidate_program,
    record_program,
)
from worker.queue import enqueue_drain, refresh_queue


class EventRecorder:
    """Records the verified events the routes hand it; the worker refreshes what they invalidated."""

    def __init__(
        self,
        redis: Redis,
        retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS,
        durable: ReplicaWait | None = None,
    ) -> None:
        self._io = SyncIO(redis)
        self._support = ScriptSupport()
        self._queue = refresh_queue(redis)
        self._retry_intervals = retry_intervals
        self._durable = durable
        self._near = NearRegistry()

    def record_event(self, svix_id: str, targets: Sequence[Target]) -> Recorded:
        """Raises RedisError, or NotReplicated when too few replicas acknowledged in time: the
        event is not recorded safely (answer 503: Svix retries, and the retry is not taken for a
        duplicate, since the message id is forgotten).

        After the record, every registered near-cache (`cache.near`) is sent the invalidation, and this
        returns only once each has acknowledged it or its lease has run out: a duplicate sends it again,
        since the first delivery's send may have failed."""
        try:
            recorded = self._io.run(record_program(targets, svix_id, durable=self._durable, support=self._support))
            if recorded.schedule_drain:
                enqueue_drain(self._queue, self._retry_intervals)
            # block_s under INTAKE_TIMEOUT_S
            observe_near(self._io.run(near_invalidate_program(targets, block_s=1.0, registry=self._near)))
        except (RedisError, NotReplicated) as exc:
            # If Redis is gone, the record stays; a duplicate's WAIT still covers this delivery's writes, and
            # the sweep queues any drain a kept marker holds back. A Redis that hangs (a timeout) would hang
            # the forget too, doubling the wait past Svix's 15 s: then the record stays as well.
            if not isinstance(exc, RedisTimeoutError):
                with contextlib.suppress(RedisError):
                    self._io.do(forget_call(svix_id))
            raise
        return recorded
