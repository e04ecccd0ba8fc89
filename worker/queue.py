"""The worker's queue: the one RQ job this project runs, and when to enqueue it.

The worker owns it; the intake (after an event) and the operator CLI enqueue through
it. The job is named by dotted path, so enqueuing imports none of the job's code.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from cache import contract
from cache.config import DEFAULT_RETRY_INTERVALS
from cache.protocol import DRAIN_MARKER_TTL_S

DRAIN_JOB = "worker.jobs.drain_pending_refreshes"
# Also bounds how long RQ waits before treating a killed SimpleWorker's job as abandoned (timeout + 60 s).
DRAIN_TIMEOUT_S = 180


def refresh_queue(redis: Redis) -> Queue:
    return Queue(contract.QUEUE_NAME, connection=redis)


def enqueue_drain(queue: Queue, retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS) -> None:
    """Retries wait ``retry_intervals`` (RQ's worker scheduler runs them); the keys stay deleted,
    never stale, meanwhile, and after the last one the job lands in RQ's failed registry."""
    queue.enqueue_call(
        DRAIN_JOB,
        retry=Retry(max=len(retry_intervals), interval=list(retry_intervals)),
        timeout=DRAIN_TIMEOUT_S,
        result_ttl=0,
        failure_ttl=7 * 86_400,
        description="refresh users whose memberships changed",
    )


def resume_unfinished(redis: Redis, retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS) -> bool:
    """Enqueue a drain if users or org patches are waiting, or were taken by a job that died,
    and no drain job is queued, scheduled for a retry or running; True if enqueued.

    Run at worker start and periodically, so work whose job was lost or ran out of retries
    does not wait for the next event.
    """
    queue = refresh_queue(redis)
    scheduled = ScheduledJobRegistry(queue=queue).count  # type: ignore[no-untyped-call]
    if queue.count or scheduled or StartedJobRegistry(queue=queue).count:
        return False
    waiting = sum(
        redis.scard(key) for key in (contract.PENDING_REFRESH_KEY, contract.REFRESHING_KEY, contract.ORG_PATCHES_KEY)
    )
    if waiting and redis.set(contract.DRAIN_SCHEDULED_KEY, "1", nx=True, ex=DRAIN_MARKER_TTL_S):
        enqueue_drain(queue, retry_intervals)
        return True
    return False
