"""Real parts only: a private redis-server per session, Clerk played by a loopback
HTTP server, webhooks signed with svix's own code, and a real RQ worker."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, StartedJobRegistry

from cache import ClerkClient, MembershipCache, set_default_cache
from cache.connections import cache_redis
from cache.contract import PENDING_REFRESH_KEY, QUEUE_NAME
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer, free_port
from devstack.signing import new_signing_secret, signed_event
from devstack.stack import REPO
from devstack.waiting import wait_until
from service.logs import JsonFormatter
from webhook import create_app
from worker.jobs import use_refresher
from worker.refresher import Refresher

SIGNING_SECRET = new_signing_secret()
CLERK_KEY = "sk_test_" + "k3y" * 10
METRICS_TOKEN = "metrics-" + "t0k" * 8
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session (never the machine's 6379)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    """A plain client on a freshly flushed server."""
    if not redis_server.running:  # a fault test may have stopped it
        redis_server.start()
    client = Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def clerk() -> Iterator[ClerkStandIn]:
    with ClerkStandIn(secret_key=CLERK_KEY) as standin:
        yield standin


def stack_env(redis_url: str, clerk: ClerkStandIn, secret: str = SIGNING_SECRET, **extra: str) -> dict[str, str]:
    """The environment for the Procfile's processes, pointed at a test Redis and Clerk stand-in."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CLERK_SECRET_KEY": CLERK_KEY,
        "CLERK_API_URL": clerk.url,
        "CLERK_WEBHOOK_SIGNING_SECRET": secret,
        "METRICS_TOKEN": METRICS_TOKEN,
        "PORT": str(free_port()),
        **extra,
    }
    for inherited in ("PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT"):
        if inherited not in extra:
            env.pop(inherited, None)
    return env


def cached_member(
    clerk: ClerkStandIn, cache: MembershipCache, user_id: str, role: str = "org:member", org_name: str = "Acme"
) -> str:
    """A new org in Clerk with ``user_id`` as a member, looked up once so the cache holds it; the org id."""
    org_id: str = clerk.create_org(org_name)["data"]["id"]
    clerk.add_membership(user_id, org_id, role)
    cache.get_memberships(user_id)
    return org_id


def make_cache(url: str, clerk: ClerkStandIn, **kwargs: Any) -> MembershipCache:
    return MembershipCache(cache_redis(url), ClerkClient(CLERK_KEY, clerk.url), **kwargs)


@pytest.fixture
def cache(redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn) -> Iterator[MembershipCache]:
    """The cache under test, also installed for the module-level functions and the jobs."""
    built = make_cache(redis_server.url, clerk)
    set_default_cache(built)
    use_refresher(Refresher(built.redis, built.clerk, ttl_seconds=built.ttl_seconds))
    yield built
    set_default_cache(None)
    use_refresher(None)


@pytest.fixture
def app(redis: Redis, redis_server: RedisServer) -> Flask:
    return create_app(
        {"REDIS_URL": redis_server.url, "CLERK_WEBHOOK_SIGNING_SECRET": SIGNING_SECRET, "METRICS_TOKEN": METRICS_TOKEN}
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post_event(client: FlaskClient, event: dict[str, Any], *, secret: str = SIGNING_SECRET, **kw: Any) -> Any:
    body, headers = signed_event(secret, event, **kw)
    return client.post("/webhooks/clerk", data=body, headers=headers)


@pytest.fixture
def run_worker(redis_server: RedisServer, cache: MembershipCache) -> Any:
    """Run the real RQ worker until the queue is empty (burst mode), in this process."""

    def run() -> int:
        """Returns how many jobs were queued; fails the test if any of them failed."""
        connection = Redis.from_url(redis_server.url)
        queue = Queue(QUEUE_NAME, connection=connection)
        queued: int = queue.count
        SimpleWorker([queue], connection=connection).work(burst=True, with_scheduler=False)
        failed = FailedJobRegistry(queue=queue).count
        connection.close()
        assert failed == 0, f"{failed} job(s) failed"
        return queued

    return run


@pytest.fixture
def worker_process(redis_server: RedisServer, clerk: ClerkStandIn) -> Iterator[subprocess.Popen[bytes]]:
    """The Procfile's worker as a real process, pointed at this test's Redis and Clerk stand-in."""
    env = stack_env(redis_server.url, clerk)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    yield process
    process.terminate()
    process.wait(15)


def wait_until_drained(redis: Redis, timeout_s: float = 60.0) -> None:
    """Until the worker has emptied the queue and the pending set and finished its job."""
    queue = Queue(QUEUE_NAME, connection=redis)
    wait_until(
        lambda: not (queue.count or redis.scard(PENDING_REFRESH_KEY) or StartedJobRegistry(queue=queue).count),
        timeout_s,
        what="the worker to drain",
    )
