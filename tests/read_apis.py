"""The sync and the async API behind one blocking face, so each read-path test runs against both.

`SyncApi` is `cache.MembershipCache` as threaded app code uses it. `AsyncApi` is
`cache.aio.AsyncMembershipCache` as asyncio app code uses it: on its own event loop, in a
thread of its own, with its clients built on that loop; each call is one coroutine run
there. Concurrency is each API's own: threads for the sync one, tasks on one loop for the
async one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Literal, Protocol, TypeVar

import cache as sync_module
import cache.aio as async_module
from cache import Membership
from cache.aio import AsyncClerkClient, AsyncMembershipCache
from cache.breaker import RedisBreaker
from cache.connections import RedisTarget, async_cache_redis
from cache.read_path import CacheStats
from tests.support import CLERK_KEY, concurrent_lookups, make_cache

T = TypeVar("T")
Kind = Literal["sync", "async"]
KINDS: tuple[Kind, ...] = ("sync", "async")


class ReadApi(Protocol):
    kind: Kind
    cache: Any
    stats: CacheStats
    breaker: RedisBreaker

    def get_memberships(self, user_id: str) -> list[Membership]: ...
    def get_membership(self, user_id: str, organization_id: str) -> Membership | None: ...
    def invalidate(self, user_id: str) -> None: ...
    def concurrent_lookups(self, user_id: str, lookups: int) -> list[list[Membership]]: ...
    def module_get_memberships(self, user_id: str) -> list[Membership]: ...
    def module_get_membership(self, user_id: str, organization_id: str) -> Membership | None: ...
    def module_invalidate(self, user_id: str) -> None: ...
    def close(self) -> None: ...


class SyncApi:
    kind: Kind = "sync"

    def __init__(self, redis_url: RedisTarget | str, clerk_url: str, clerk_key: str, **options: Any) -> None:
        self.cache = make_cache(redis_url, clerk_url, clerk_key=clerk_key, **options)
        self.stats = self.cache.stats
        self.breaker = self.cache.breaker
        sync_module.set_default_cache(self.cache)

    def get_memberships(self, user_id: str) -> list[Membership]:
        return self.cache.get_memberships(user_id)

    def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        return self.cache.get_membership(user_id, organization_id)

    def invalidate(self, user_id: str) -> None:
        self.cache.invalidate(user_id)

    def concurrent_lookups(self, user_id: str, lookups: int) -> list[list[Membership]]:
        return concurrent_lookups(self.cache, user_id, lookups)

    def module_get_memberships(self, user_id: str) -> list[Membership]:
        return sync_module.get_cached_user_org_memberships(user_id)

    def module_get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        return sync_module.get_user_org_membership(user_id, organization_id)

    def module_invalidate(self, user_id: str) -> None:
        sync_module.invalidate_user_org_memberships(user_id)

    def close(self) -> None:
        sync_module.set_default_cache(None)
        self.cache.redis.close()


class AsyncApi:
    kind: Kind = "async"

    def __init__(self, redis_url: RedisTarget | str, clerk_url: str, clerk_key: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-api", daemon=True)
        self._thread.start()

        async def build() -> AsyncMembershipCache:
            return AsyncMembershipCache(async_cache_redis(redis_url), AsyncClerkClient(clerk_key, clerk_url, **options))

        self.cache = self._run(build())
        self.stats = self.cache.stats
        self.breaker = self.cache.breaker
        async_module.set_default_cache(self.cache)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def get_memberships(self, user_id: str) -> list[Membership]:
        return self._run(self.cache.get_memberships(user_id))

    def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        return self._run(self.cache.get_membership(user_id, organization_id))

    def invalidate(self, user_id: str) -> None:
        self._run(self.cache.invalidate(user_id))

    def concurrent_lookups(self, user_id: str, lookups: int) -> list[list[Membership]]:
        async def together() -> list[list[Membership]]:
            return list(await asyncio.gather(*(self.cache.get_memberships(user_id) for _ in range(lookups))))

        return self._run(together())

    def module_get_memberships(self, user_id: str) -> list[Membership]:
        return self._run(async_module.get_cached_user_org_memberships(user_id))

    def module_get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        return self._run(async_module.get_user_org_membership(user_id, organization_id))

    def module_invalidate(self, user_id: str) -> None:
        self._run(async_module.invalidate_user_org_memberships(user_id))

    def close(self) -> None:
        async_module.set_default_cache(None)
        self._run(self.cache.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def make_api(
    kind: Kind, redis_url: RedisTarget | str, clerk_url: str, *, clerk_key: str = CLERK_KEY, **options: Any
) -> ReadApi:
    """The ``kind`` API on ``redis_url`` and the Clerk (stand-in) at ``clerk_url``, installed as the default."""
    api: ReadApi = (SyncApi if kind == "sync" else AsyncApi)(redis_url, clerk_url, clerk_key, **options)
    return api
