"""``python -m worker``: validate the environment, then run an RQ worker on our queue.

SimpleWorker runs jobs in the worker process itself: our jobs are short and
trusted, and skipping a fork per job more than doubles throughput. The scheduler
is on because job retries with intervals need it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from prometheus_client import REGISTRY, start_http_server
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker

from cache.config import Settings
from cache.contract import QUEUE_NAME
from cache.errors import ConfigError
from cache.logs import configure_logging
from cache.redis_checks import risky_settings
from cache.refresh_queue import resume_unfinished
from worker.queue_metrics import QueueCollector

WORKER_TTL_S = 60  # heartbeat lifetime: a dead worker's job is noticed sooner than RQ's 420 s default
MAINTENANCE_INTERVAL_S = 60  # how often abandoned jobs are looked for (RQ's default: 600 s)


class _Worker(SimpleWorker):
    """Remembers whether it stopped on a signal, to tell a shutdown from a crash."""

    signalled = False

    def request_stop(self, signum: int, frame: object) -> None:
        self.signalled = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def wait_for_redis(connection: Redis, log: logging.Logger) -> None:
    delay = 0.1
    while True:
        try:
            connection.ping()
            return
        except RedisError:
            log.warning("Redis unavailable; retrying in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _metrics_port() -> int | None:
    raw = os.environ.get("WORKER_METRICS_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65_535:
        raise ConfigError("WORKER_METRICS_PORT", "must be a port number from 1 to 65535")
    return int(raw)


def _sweep_seconds() -> float:
    raw = os.environ.get("WORKER_SWEEP_SECONDS", "").strip() or "60"
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        raise ConfigError("WORKER_SWEEP_SECONDS", "must be a number of seconds from 0.1 to 3600")
    return value


def _sweep(settings: Settings, every_s: float, log: logging.Logger) -> None:
    """Now and then, queue a drain for work nothing is handling (a lost job, retries run out)."""
    connection = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    while True:
        time.sleep(every_s)
        try:
            if resume_unfinished(connection, settings.refresh_retry_intervals):
                log.info("queued a drain for work no job was handling")
        except RedisError:
            pass  # the main loop reports Redis outages


def main() -> int:
    configure_logging()
    try:
        settings = Settings.from_env()
        metrics_port = _metrics_port()
        sweep_s = _sweep_seconds()
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    connection = Redis.from_url(settings.redis_url)  # RQ's own client; the cache builds a fail-fast one
    log = logging.getLogger("worker")
    for warning in risky_settings(connection):
        log.warning(warning)
    queue = Queue(QUEUE_NAME, connection=connection)
    if metrics_port is not None:
        REGISTRY.register(QueueCollector(connection))
        start_http_server(metrics_port)
        log.info("metrics on port %d", metrics_port)
    threading.Thread(target=_sweep, args=(settings, sweep_s, log), name="sweep", daemon=True).start()
    while True:
        # RQ's worker quits on a Redis error mid-job; a Redis restart must not take the worker down with it
        # (on a Procfile host under honcho, one process exiting stops them all).
        wait_for_redis(connection, log)
        try:
            if resume_unfinished(connection, settings.refresh_retry_intervals):
                log.info("queued a drain for refreshes left unfinished")
        except RedisError:
            continue
        worker = _Worker(
            [queue], connection=connection, worker_ttl=WORKER_TTL_S, maintenance_interval=MAINTENANCE_INTERVAL_S
        )
        try:
            worker.work(with_scheduler=True)
        except RedisError:
            log.warning("worker lost Redis", exc_info=True)
        if worker.signalled:  # SIGTERM or SIGINT: a warm shutdown
            break
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the next worker installs RQ's handlers
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log.warning("worker stopped after an error; starting a new one once Redis answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
