"""RQ jobs. Arguments are primitives; webhook/ enqueues them by dotted path.

The intake has already invalidated every affected key before a job runs, so jobs
only *warm* the cache again from Clerk. A job that cannot reach Clerk leaves the
key deleted (never an outdated value) and is retried with backoff by RQ.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from redis.exceptions import RedisError
from rq import get_current_job

from cache.config import Settings
from cache.errors import ClerkAuthError, ClerkCacheError, ClerkError, ClerkUnavailable
from cache.protocol import DRAIN_HEARTBEAT_S, PatchAction
from worker.metrics import JOB_SECONDS, JOBS, REFRESHES
from worker.queue import enqueue_drain, refresh_queue
from worker.refresher import Refresher
from worker.store import RefreshStore

log = logging.getLogger(__name__)
BATCH = 100
DRAIN_SLICE_S = 120.0  # one job takes new batches for this long, then queues a successor (RQ's timeout is 180 s)
PATCH_BATCH = 1000  # users patched per Clerk read of the org
ROLE_PATCH_BATCH = 10_000  # users patched per read of Clerk's role list (1 or 2 pages)

_state_lock = threading.Lock()
_refresher: Refresher | None = None
_concurrency = 8


class RefreshIncomplete(ClerkCacheError):
    """Some users could not be refreshed; they are pending again and RQ retries the job."""


def configure(settings: Settings) -> None:
    """Build the refresher jobs use in this process from the settings (``python -m worker`` does)."""
    use_refresher(Refresher.from_settings(settings), settings.refresh_concurrency)


def use_refresher(refresher: Refresher | None, concurrency: int = 8) -> None:
    """Install the refresher jobs use in this process (tests, embedding); None: build from env on first use."""
    global _refresher, _concurrency
    with _state_lock:
        _refresher, _concurrency = refresher, concurrency


def _current_refresher() -> Refresher:
    with _state_lock:
        refresher = _refresher
    if refresher is None:
        configure(Settings.from_env(process="worker"))
        return _current_refresher()
    return refresher


def drain_pending_refreshes() -> dict[str, int]:
    """Patch org events' stashed members, then refresh every user in the pending set, a batch
    at a time: one round trip for the leases, Clerk calls in parallel, one for the fills."""
    started = time.perf_counter()
    try:
        counts = _drain()
    except Exception:
        JOBS.labels("drain", "failed").inc()
        raise
    finally:
        JOB_SECONDS.labels("drain").observe(time.perf_counter() - started)
    JOBS.labels("drain", "succeeded").inc()
    for outcome, n in counts.items():
        REFRESHES.labels(outcome).inc(n)
    log.info("drained", extra=counts)
    return counts


@contextmanager
def _drain_lease(store: RefreshStore) -> Iterator[str]:
    """The job's id, with its lease renewed from a heartbeat thread until the job ends.

    If the worker dies, the lease lapses within DRAIN_LEASE_MS and the users this job had
    taken are put back for the next drain (`RefreshStore.recover_drains`).
    """
    job = get_current_job()
    drain_id = job.id if job is not None else uuid.uuid4().hex
    store.start_drain(drain_id)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(DRAIN_HEARTBEAT_S):
            with contextlib.suppress(RedisError):
                store.renew_drain(drain_id)

    beating = threading.Thread(target=heartbeat, name="drain-heartbeat", daemon=True)
    beating.start()
    try:
        yield drain_id
    finally:
        stop.set()
        beating.join()
        with contextlib.suppress(RedisError):
            store.end_drain(drain_id)


def _drain() -> dict[str, int]:
    refresher = _current_refresher()
    store = refresher.store
    with _drain_lease(store) as drain_id:
        return _drain_as(drain_id, refresher, store)


def _drain_as(drain_id: str, refresher: Refresher, store: RefreshStore) -> dict[str, int]:
    patched = _patch_orgs(refresher, store)
    refreshed = skipped = 0
    failed: list[str] = []
    batch: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=_concurrency, thread_name_prefix="refresh") as pool:
            sliced_at = time.monotonic() + DRAIN_SLICE_S
            while time.monotonic() < sliced_at and (batch := store.take_pending(BATCH, drain_id)):
                retry: list[str] = []
                for user_id, outcome in refresher.refresh_many(batch, pool).items():
                    if isinstance(outcome, ClerkUnavailable | ClerkAuthError):
                        log.warning("refresh failed", extra={"user_id": user_id, "error": type(outcome).__name__})
                        retry.append(user_id)
                    elif isinstance(outcome, ClerkError):
                        log.warning("refresh dropped", extra={"user_id": user_id, "status": outcome.status})
                        skipped += 1
                    elif outcome:
                        refreshed += 1
                    else:
                        skipped += 1
                store.done(drain_id, refreshed=[u for u in batch if u not in retry])
                failed += retry
                batch = []
    finally:
        # on any exit, users taken but not refreshed go back for the retry (best effort: Redis may be down;
        # if this process dies instead, its lease lapses and the next drain recovers them)
        with contextlib.suppress(RedisError):
            store.done(drain_id, refreshed=[], retry=failed + batch)
    if failed:
        REFRESHES.labels("failed").inc(len(failed))
        raise RefreshIncomplete(f"{len(failed)} user(s) could not be refreshed; they stay uncached until a retry")
    if store.pending_count():  # the slice is over (the Clerk budget paces a big re-warm): a new job goes on
        enqueue_drain(refresh_queue(refresher.redis))
    return {"patched": patched, "refreshed": refreshed, "skipped": skipped}


def _patch_orgs(refresher: Refresher, store: RefreshStore) -> int:
    """Members stashed by org events, and holders stashed by role events: one Clerk read per batch,
    values patched and written back. Users that cannot be patched join the full-refresh set, handled
    right after."""
    patched = 0
    for kind, org_id in store.org_patches():
        batch = ROLE_PATCH_BATCH if kind == "r" else PATCH_BATCH
        while users := store.patch_members(org_id, batch):
            roles = kind == "r"
            outcomes = refresher.patch_roles(users) if roles else refresher.patch_org(org_id, kind == "x", users)
            patched += sum(1 for o in outcomes if o.action is PatchAction.DONE and o.stash is not None)
            store.finish_patch(org_id, outcomes)
        store.finish_org_patch(kind, org_id)
    return patched
