"""``python -m worker``: validate the environment, then run an RQ worker on our queue.

SimpleWorker runs jobs in the worker process itself: our jobs are short and
trusted, and skipping a fork per job more than doubles throughput. The scheduler
is on because job retries with intervals need it.
"""

from __future__ import annotations

import logging
import sys

from redis import Redis
from rq import Queue, SimpleWorker

from cache.config import Settings
from cache.contract import QUEUE_NAME
from cache.errors import ConfigError
from cache.redis_checks import risky_settings

WORKER_TTL_S = 60  # heartbeat lifetime: a dead worker's job is noticed sooner than RQ's 420 s default
MAINTENANCE_INTERVAL_S = 60  # how often abandoned jobs are looked for (RQ's default: 600 s)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    connection = Redis.from_url(settings.redis_url)  # RQ's own client; the cache builds a fail-fast one
    for warning in risky_settings(connection):
        logging.getLogger("worker").warning(warning)
    queue = Queue(QUEUE_NAME, connection=connection)
    worker = SimpleWorker(
        [queue], connection=connection, worker_ttl=WORKER_TTL_S, maintenance_interval=MAINTENANCE_INTERVAL_S
    )
    worker.work(with_scheduler=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
