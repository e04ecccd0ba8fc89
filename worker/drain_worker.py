"""The RQ worker class the worker process runs, and the scheduler it runs beside it.

SimpleWorker runs jobs in the worker process itself: our jobs are short and
trusted, and skipping a fork per job more than doubles throughput. The scheduler
is on because job retries with intervals need it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.scheduler import RQScheduler

from cache.config import DEFAULT_RETRY_INTERVALS
from worker.queue import resume_unfinished

log = logging.getLogger("worker")


class OwnClientScheduler(RQScheduler):
    """RQ's scheduler on a client that `connect` builds, in each process it runs in.

    RQ's own rebuilds a plain ConnectionPool from the worker's pool's connection class,
    which breaks a Sentinel pool. The scheduler runs in a forked process, so the client is
    dropped before each fork (`start`) and built anew on first use after it.
    """

    def __init__(self, queues: Sequence[Queue], *, connect: Callable[[], Redis], **kwargs: Any) -> None:
        self._connect_own_client = connect
        self._own_client: Redis | None = connect()
        super().__init__(queues, connection=self._own_client, **kwargs)

    @property
    def connection(self) -> Redis:
        if self._own_client is None:
            self._own_client = self._connect_own_client()
        return self._own_client

    def start(self) -> Any:
        self._own_client = None  # a client must not be shared with the forked process
        return super().start()  # type: ignore[no-untyped-call]


class DrainWorker(SimpleWorker):
    """RQ's SimpleWorker whose maintenance pass also queues a drain for work no job is handling
    (a lost enqueue, a job whose retries ran out), and which tells a shutdown from a crash.

    Like RQ's ``connection=``, the client its scheduler uses and the retry intervals of the
    drains it queues are given to the constructor: ``connect_scheduler`` builds a fresh client
    (called again in the scheduler's process). The scheduler always runs, started once RQ's
    start-up is done: pass no ``with_scheduler`` to `work`.

    RQ runs maintenance between jobs and whenever its blocking dequeue times out, so the
    pass comes every ``maintenance_interval`` seconds while idle provided the dequeue
    timeout (``worker_ttl`` - 15 s) is no longer: `for_interval` sizes both.
    """

    def __init__(
        self,
        queues: Sequence[Queue],
        *,
        connection: Redis,
        connect_scheduler: Callable[[], Redis],
        retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS,
        **kwargs: Any,
    ) -> None:
        super().__init__(queues, connection=connection, **kwargs)
        self.connect_scheduler = connect_scheduler
        self.retry_intervals = retry_intervals
        self.signalled = False

    @classmethod
    def for_interval(
        cls,
        queue: Queue,
        interval_s: float,
        *,
        connection: Redis,
        connect_scheduler: Callable[[], Redis],
        retry_intervals: tuple[int, ...] = DEFAULT_RETRY_INTERVALS,
    ) -> DrainWorker:
        worker_ttl = max(16, min(60, int(interval_s) + 15))  # the dequeue blocks worker_ttl - 15 s at most
        return cls(
            [queue],
            connection=connection,
            connect_scheduler=connect_scheduler,
            retry_intervals=retry_intervals,
            worker_ttl=worker_ttl,
            maintenance_interval=interval_s,
        )

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """RQ's start-up, then the scheduler, where ``work(with_scheduler=True)`` would start RQ's own.

        `acquire_locks` with ``auto_start`` is how RQ's maintenance pass restarts a scheduler
        that died: the same call starts it here, in its own process, if this worker gets the lock.
        """
        super().bootstrap(*args, **kwargs)
        self.scheduler = OwnClientScheduler(self.queues, connect=self.connect_scheduler, serializer=self.serializer)
        self.scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        try:
            if resume_unfinished(self.connection, self.retry_intervals):
                log.info("queued a drain for work no job was handling")
        except RedisError:
            pass  # the main loop reports Redis outages

    def request_stop(self, signum: int, frame: object) -> None:
        self.signalled = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]
