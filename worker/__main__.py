"""``python -m worker``: validate the environment, then run a `DrainWorker` on our queue,
and a new one whenever Redis took the last one down."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from prometheus_client import REGISTRY, start_http_server
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from cache.config import settings_or_exit
from cache.connections import RedisTarget, Role, redis_client
from cache.contract import QUEUE_NAME
from cache.protocol import DRAIN_LEASE_MS
from service.logs import configure_logging
from service.redis_checks import log_risky_settings
from worker import jobs
from worker.drain_worker import DrainWorker
from worker.queue import resume_unfinished
from worker.queue_metrics import QueueCollector

log = logging.getLogger("worker")
TAKE_OVER_DELAY_S = 2 * DRAIN_LEASE_MS / 1000 + 0.5  # after start, when a dead worker's drain lease has lapsed


def wait_for_primary(connection: Redis) -> None:
    """Return once the connection reaches a primary; back off meanwhile, logging once per state change.

    A node demoted to replica by a failover answers PING but refuses writes (READONLY): without
    this check the worker would restart RQ in a tight loop and log each failure.
    """
    delay, state = 0.1, "primary"
    while True:
        try:
            role = connection.execute_command("ROLE")[0]  # type: ignore[no-untyped-call]
            now = "primary" if role in (b"master", "master") else "replica (READONLY)"
        except RedisError as exc:
            now = f"unavailable ({type(exc).__name__})"
        if now == "primary":
            if state != "primary":
                log.info("Redis primary reachable again")
            return
        if now != state:
            log.warning("Redis is %s; waiting for a primary", now)
            state = now
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def take_over_soon(connection: Redis, retry_intervals: tuple[int, ...]) -> None:
    """Once a dead worker's drain lease has had time to lapse (its job is then removable), queue its
    work, without holding up this worker's start: a live worker's job must not delay it.

    The maintenance pass RQ runs at start may come before the lapse; the next one could be
    WORKER_SWEEP_SECONDS away, so this one-off pass makes the take-over take seconds, not minutes."""

    def once() -> None:
        try:
            if resume_unfinished(connection, retry_intervals):
                log.info("queued a drain for work a dead worker left")
        except RedisError:
            pass  # the main loop reports Redis outages

    timer = threading.Timer(TAKE_OVER_DELAY_S, once)
    timer.daemon = True
    timer.start()


def main() -> int:
    settings = settings_or_exit("worker", "worker")
    configure_logging(settings)
    jobs.configure(settings)
    target = RedisTarget.from_settings(settings)
    connection = redis_client(target, Role.WORKER)  # RQ's own client; the jobs build a fail-fast one
    log_risky_settings(connection, log)
    queue = Queue(QUEUE_NAME, connection=connection)
    if settings.worker_metrics_port is not None:
        REGISTRY.register(QueueCollector(connection))
        start_http_server(settings.worker_metrics_port)
        log.info("metrics on port %d", settings.worker_metrics_port)
    take_over_soon(connection, settings.refresh_retry_intervals)
    while True:
        # RQ's worker quits on a Redis error mid-job; a Redis restart must not take the worker down with it
        # (on a Procfile host under honcho, one process exiting stops them all).
        wait_for_primary(connection)
        worker = DrainWorker.for_interval(
            queue,
            settings.worker_sweep_seconds,
            connection=connection,
            connect_scheduler=lambda: redis_client(target, Role.WORKER),
            retry_intervals=settings.refresh_retry_intervals,
        )
        started = time.monotonic()
        try:
            worker.work()  # with its scheduler; maintenance runs first: it resumes what a dead worker left
        except RedisError as exc:
            log.warning("worker lost Redis (%s)", type(exc).__name__)
        if worker.signalled:  # SIGTERM or SIGINT: a warm shutdown
            break
        if time.monotonic() - started < 1.0:
            time.sleep(1.0)  # failing at once again: do not spin
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the next worker installs RQ's handlers
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log.warning("worker stopped after an error; starting a new one once Redis answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
