"""The worker's queue: the one RQ job this project runs, and when to enqueue it.

The worker owns it; the intake (after an event) and the operator CLI enqueue through
it. The job is named by dotted path, so enqueuing imports none of the job's code.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from redis import Redis
from rq import Queue, Retry
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from cache import contract
from cache.config import DEFAULT_RETRY_INTERVALS
from cache.protocol import DRAIN_LEASE_MS, DRAIN_MARKER_TTL_S
from worker.store import RefreshStore

log = logging.getLogger("worker")
SCHEDULER_SLACK_S = 5  # a retry this late means RQ's scheduler is not running

DRAIN_JOB = "worker.jobs.drain_pending_refreshes"
DRAIN_TIMEOUT_S = 180  # RQ's own limit; a dead worker's job is found sooner by its lapsed lease


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

    Run by the worker's maintenance pass (at start, then every WORKER_SWEEP_SECONDS), so work
    whose job was lost, died with its worker or ran out of retries does not wait for the next event.
    """
    store = RefreshStore(redis)
    store.recover_drains()
    queue = refresh_queue(redis)
    remove_dead_drain_jobs(queue, store)
    if queue.count or StartedJobRegistry(queue=queue).count or retry_on_its_way(queue):
        return False
    if store.waiting_work():
        # the intake's "a drain is queued" marker may be stale (its job lost, e.g. in a failover): set it anew
        redis.set(contract.DRAIN_SCHEDULED_KEY, "1", ex=DRAIN_MARKER_TTL_S)
        enqueue_drain(queue, retry_intervals)
        return True
    return False


def retry_on_its_way(queue: Queue) -> bool:
    """A drain retry is scheduled and not overdue. An overdue one means RQ's scheduler is not running
    (it dies with its connection, e.g. in a failover, and restarts only once its lock lapses): then a
    fresh drain goes ahead, and the late retry, if it ever runs, finds little to do."""
    registry = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    if not registry.count:
        return False
    overdue = registry.get_jobs_to_schedule(int(datetime.now(UTC).timestamp()) - SCHEDULER_SLACK_S)
    return len(overdue) < registry.count


def remove_dead_drain_jobs(queue: Queue, store: RefreshStore) -> list[str]:
    """Delete drain jobs RQ still lists as started whose lease lapsed: their worker died.

    RQ would notice on its own only once the job's timeout and heartbeat margin have passed
    (minutes for a SimpleWorker); the lease tells within DRAIN_LEASE_MS. Their users are
    recovered by `RefreshStore.recover_drains`, so nothing is lost by deleting the job.
    """
    removed = []
    registry = StartedJobRegistry(queue=queue)
    for job_id in registry.get_job_ids():
        job = queue.fetch_job(job_id)
        if job is None:  # listed as started, but the job itself is gone (a failover kept one and not the other)
            members: list[bytes | str] = registry.connection.zrange(registry.key, 0, -1)  # type: ignore[assignment]
            entries = [e for e in members if _text(e).startswith(job_id)]
            if entries:
                registry.connection.zrem(registry.key, *entries)
            continue
        if job.func_name != DRAIN_JOB or job.started_at is None:
            continue
        started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
        old_enough = datetime.now(UTC) - started > timedelta(milliseconds=DRAIN_LEASE_MS * 2)
        if old_enough and not store.drain_alive(job.id):
            job.delete()  # also removes its executions from the started registry
            removed.append(job.id)
            log.warning("removed drain job %s: its worker died mid-job; its users are queued again", job.id)
    return removed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
