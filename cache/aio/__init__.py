"""The membership cache for asyncio app code (FastAPI, Starlette, Quart, Django's async views).

Same Redis contract, Lua scripts, leases, circuit breaker, Clerk retries, paging and
budget, metrics and errors as `cache`: the decisions are the very programs of
`cache.read_path`, `cache.clerk` and `cache.budget`, carried out by `cache.aio.io` over
``redis.asyncio`` and ``httpx.AsyncClient``; nothing here blocks the event loop.

One thing only the async cache does: lookups of one user that arrive before that user's
lookup has sent anything share it (1,000 concurrent cold lookups cost one GET, one lease
and one Clerk read). A lookup never joins one whose Redis read is already on its way, so
each answer still comes from reads issued after its own call began: freshness is the
same as the sync API's.

Needs the ``async`` extra: ``pip install 'clerk-org-cache[async]'`` (httpx). Build one
cache per event loop; its clients belong to that loop.
"""

from __future__ import annotations

import asyncio
from typing import Any, Unpack

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("cache.aio needs httpx: pip install 'clerk-org-cache[async]'") from exc
from redis.asyncio import Redis

from cache.aio.io import AsyncIO
from cache.budget import BudgetPolicy, BudgetRules, Priority
from cache.clerk import ClerkOptions, ClerkReads
from cache.config import Settings
from cache.connections import RedisTarget, async_cache_redis
from cache.contract import Membership, check_org_id, check_user_id
from cache.durability import ReplicaWait, WaitPolicy
from cache.read_path import CacheFront, ReadPathOptions, membership_in

__all__ = [
    "AsyncClerkBudget",
    "AsyncClerkClient",
    "AsyncMembershipCache",
    "build_cache",
    "default_cache",
    "get_cached_user_org_memberships",
    "get_user_org_membership",
    "invalidate_user_org_memberships",
    "set_default_cache",
]


class AsyncClerkBudget(BudgetRules):
    """The fleet's Clerk budget (`cache.budget`) over a ``redis.asyncio`` client."""

    def __init__(self, redis: Redis, policy: BudgetPolicy | None = None) -> None:
        super().__init__(policy)
        self.redis = redis


class AsyncClerkClient(ClerkReads):
    """`ClerkReads` over an ``httpx.AsyncClient`` (injectable: tests, custom transports)."""

    def __init__(
        self,
        secret_key: str,
        api_url: str = "https://api.clerk.com",
        *,
        http: httpx.AsyncClient | None = None,
        budget: AsyncClerkBudget | None = None,
        **options: Unpack[ClerkOptions],
    ) -> None:
        super().__init__(secret_key, api_url, budget=budget, **options)
        self.http = http or httpx.AsyncClient()
        self._io = AsyncIO(budget.redis if budget else None, http=self.http)

    async def list_user_memberships(self, user_id: str) -> list[dict[str, Any]]:
        """All of a user's organization memberships, every page."""
        return await self._io.run(self.reading_user_memberships(user_id))

    async def get_organization(self, org_id: str) -> dict[str, Any]:
        return await self._io.run(self.reading_organization(org_id))

    async def aclose(self) -> None:
        await self.http.aclose()


class AsyncMembershipCache(CacheFront):
    """Answers "which orgs is this user in, with which role?" from Redis, else Clerk, on asyncio.

    Build one per event loop with injected clients; ``redis`` should be a fail-fast
    client such as `cache.connections.async_cache_redis`. Options as `cache.MembershipCache`'s,
    and as there one runner, over ``redis`` and the Clerk client's ``http``, carries out every
    effect of a lookup (the budget's scripts included).
    """

    def __init__(self, redis: Redis, clerk: AsyncClerkClient, **options: Unpack[ReadPathOptions]) -> None:
        super().__init__(clerk, **options)
        self.redis = redis
        self.clerk = clerk
        self._io = AsyncIO(redis, http=clerk.http)
        self._forming: dict[str, _Flight] = {}  # lookups not yet sent, by user

    async def get_memberships(self, user_id: str) -> list[Membership]:
        """The user's memberships; raises ClerkError subclasses only if Clerk is needed and fails."""
        check_user_id(user_id)
        loop = asyncio.get_running_loop()
        flight = self._forming.get(user_id)
        if flight is not None and flight.loop is loop:
            return await self._join(flight, user_id)
        flight = _Flight(loop)
        self._forming[user_id] = flight
        try:
            try:
                await asyncio.sleep(0)  # one loop turn: lookups of this user begun in it join before anything is sent
            finally:
                if self._forming.get(user_id) is flight:
                    del self._forming[user_id]  # from here on the reads go out: a later caller starts its own
            answer = await self._io.run(self.read_path.memberships(user_id))
        except asyncio.CancelledError:
            flight.settle(error=_LeaderGaveUp())  # the program gave its lease back; the joiners look up anew
            raise
        except BaseException as exc:
            flight.settle(error=exc)  # a Clerk error is their answer too: they joined before any read
            raise
        flight.settle(answer=list(answer))  # a copy: the leader's caller may change its own list
        return answer

    async def _join(self, flight: _Flight, user_id: str) -> list[Membership]:
        self.stats.add("coalesced")
        flight.joiners += 1
        try:
            return list(await asyncio.shield(flight.future))  # one joiner giving up leaves the others' answer
        except asyncio.CancelledError:
            flight.joiners -= 1
            raise
        except _LeaderGaveUp:
            return await self.get_memberships(user_id)  # reads issued now, after this call began: as fresh

    async def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        """The user's membership in one org, or None: the question most auth checks ask."""
        check_org_id(organization_id)
        return membership_in(await self.get_memberships(user_id), organization_id)

    async def invalidate(self, user_id: str) -> None:
        """Drop the user's cached value and void any fill in flight.

        Raises CacheUnavailable if Redis cannot confirm it, or NotReplicated (a
        CacheUnavailable) if too few replicas acknowledged it: the caller must know.
        """
        await self._io.run(self.read_path.invalidating(user_id))

    async def aclose(self) -> None:
        """Close both clients (the cache is unusable afterwards)."""
        await self.clerk.aclose()
        await self.redis.aclose()


class _LeaderGaveUp(Exception):
    """The lookup others joined was cancelled by its own caller: each joiner looks up itself."""


class _Flight:
    """A lookup of one user that others may join until it sends its first read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Membership]] = loop.create_future()
        self.joiners = 0

    def settle(self, *, answer: list[Membership] | None = None, error: BaseException | None = None) -> None:
        if not self.joiners:
            return  # nobody to tell (and no "exception never retrieved" warning)
        if error is not None:
            self.future.set_exception(error)
        else:
            assert answer is not None
            self.future.set_result(answer)


def build_cache(settings: Settings) -> AsyncMembershipCache:
    """An async cache with its own fail-fast Redis client (through Sentinel when configured) and httpx client."""
    redis = async_cache_redis(RedisTarget.from_settings(settings))
    budget = AsyncClerkBudget(redis, BudgetPolicy.from_settings(settings))
    return AsyncMembershipCache(
        redis,
        AsyncClerkClient(
            settings.clerk_secret_key, settings.clerk_api_url, budget=budget, priority=Priority.INTERACTIVE
        ),
        ttl_seconds=settings.user_orgs_ttl_seconds,
        durable=ReplicaWait(WaitPolicy.from_settings(settings)),
    )


_installed: AsyncMembershipCache | None = None
_built: dict[int, tuple[asyncio.AbstractEventLoop, AsyncMembershipCache]] = {}  # by id(loop)


def default_cache() -> AsyncMembershipCache:
    """The cache `set_default_cache` installed, else this event loop's own, built from the environment on
    first use here (asyncio clients belong to one loop: each running loop gets its own)."""
    if _installed is not None:
        return _installed
    loop = asyncio.get_running_loop()
    for key, (other, _) in list(_built.items()):
        if other.is_closed():
            del _built[key]  # its loop is gone, and its clients with it
    entry = _built.get(id(loop))
    if entry is None or entry[0] is not loop:
        entry = _built[id(loop)] = (loop, build_cache(Settings.from_env(process="library")))
    return entry[1]


def set_default_cache(cache: AsyncMembershipCache | None) -> None:
    """Install ``cache`` for the module-level functions (None: each loop builds its own from the environment).

    Its clients belong to the event loop that first uses them: install one per loop (e.g. in the app's
    lifespan), not one for several loops.
    """
    global _installed
    _installed = cache


async def get_cached_user_org_memberships(user_id: str) -> list[Membership]:
    """All of the user's memberships, from Redis when cached, else from Clerk."""
    return await default_cache().get_memberships(user_id)


async def get_user_org_membership(user_id: str, organization_id: str) -> Membership | None:
    """The user's membership in one organization, or None if not a member."""
    return await default_cache().get_membership(user_id, organization_id)


async def invalidate_user_org_memberships(user_id: str) -> None:
    """Drop the user's cached memberships now (raises CacheUnavailable if Redis is down)."""
    await default_cache().invalidate(user_id)
