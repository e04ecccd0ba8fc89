"""Real parts only: a private redis-server (one per session, or one per test that stops it),
Clerk played by a loopback HTTP server, webhooks signed with svix's own code, and a real RQ
worker. The fixtures are built on tests/support.py, which the tests import for the rest."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from cache import MembershipCache, set_default_cache
from cache.connections import RedisTarget
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from service.logs import JsonFormatter
from tests.read_apis import KINDS, Kind, ReadApi, make_api
from tests.support import (
    CLERK_KEY,
    METRICS_TOKEN,
    SIGNING_SECRET,
    intake_client,
    make_cache,
    procfile_process,
    stack_env,
    work_burst,
)
from worker.jobs import use_refresher
from worker.refresher import Refresher


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(JsonFormatter().format(record))


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log() -> Iterator[None]:
    """Every log line of the in-process tests, checked at the end for the suite's secrets."""
    recorder = _Recorder()
    logging.getLogger().addHandler(recorder)
    logging.getLogger().setLevel(logging.DEBUG)
    yield
    logging.getLogger().removeHandler(recorder)
    text = "\n".join(recorder.lines)
    assert recorder.lines, "nothing was logged: the check would prove nothing"
    for secret in (SIGNING_SECRET, SIGNING_SECRET.removeprefix("whsec_"), CLERK_KEY, METRICS_TOKEN):
        assert secret not in text


# -- Redis, as pytest-redis shapes it: a server process owned by a fixture, and a client fixture


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server on a free port for the session (never the machine's 6379)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for this test alone, which it may stop, restart or reconfigure."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    """A plain client on the session's server, freshly flushed."""
    if not redis_server.running:  # a test may have stopped it
        redis_server.start()
    client = Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


# -- Clerk, the cache and the intake


@pytest.fixture
def clerk() -> Iterator[ClerkStandIn]:
    with ClerkStandIn(secret_key=CLERK_KEY) as standin:
        yield standin


@pytest.fixture
def cache(redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn) -> Iterator[MembershipCache]:
    """The cache under test, also installed for the module-level functions and the jobs."""
    built = make_cache(redis_server.url, clerk.url)
    set_default_cache(built)
    use_refresher(Refresher(built.redis, built.clerk, ttl_seconds=built.ttl_seconds))
    yield built
    set_default_cache(None)
    use_refresher(None)


@pytest.fixture(params=KINDS)
def api_kind(request: pytest.FixtureRequest) -> Kind:
    """Each read-path test runs against the sync API and the async one."""
    kind: Kind = request.param
    return kind


@pytest.fixture
def open_api(api_kind: Kind) -> Iterator[Callable[..., ReadApi]]:
    """Opens the API under test on a given Redis and Clerk (installed as the default); closes it after."""
    opened: list[ReadApi] = []

    def open_(redis_url: RedisTarget | str, clerk_url: str, **options: Any) -> ReadApi:
        opened.append(make_api(api_kind, redis_url, clerk_url, **options))
        return opened[-1]

    yield open_
    for api in opened:
        api.close()


@pytest.fixture
def api(open_api: Callable[..., ReadApi], redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn) -> ReadApi:
    """The API under test (sync, then async) on the session's Redis and the Clerk stand-in."""
    return open_api(redis_server.url, clerk.url)


@pytest.fixture
def client(redis: Redis, redis_server: RedisServer) -> FlaskClient:
    """A test client of the intake on the session's (flushed) Redis, with metrics behind METRICS_TOKEN."""
    return intake_client(redis_server.url, METRICS_TOKEN=METRICS_TOKEN)


# -- the worker


@pytest.fixture
def run_worker(redis_server: RedisServer, cache: MembershipCache) -> Callable[[], int]:
    """Run the real RQ worker until the queue is empty (burst mode), in this process."""

    def run() -> int:
        """Returns how many jobs were queued; fails the test if any job failed."""
        burst = work_burst(redis_server.url)
        assert burst.failed == 0, f"{burst.failed} job(s) failed"
        return burst.queued

    return run


@pytest.fixture
def worker_process(redis_server: RedisServer, clerk: ClerkStandIn) -> Iterator[subprocess.Popen[bytes]]:
    """The Procfile's worker as a real process, pointed at this test's Redis and Clerk stand-in."""
    with procfile_process("worker", stack_env(redis_server.url, clerk)) as process:
        yield process
