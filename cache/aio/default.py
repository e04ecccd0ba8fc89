"""The default cache of each event loop: what the module-level functions of `cache.aio` look up with.

The twin of `cache.default`, with one difference forced by asyncio: a ``redis.asyncio``
or httpx client belongs to the event loop that first uses it, so one process-wide cache
would break as soon as a second loop (a test, a worker thread running its own loop) used
it. Hence two pieces of module state, each there for a reason: ``_installed``, the cache
an app installs with `set_default_cache` (e.g. in its lifespan), and ``_built``, the
cache built from the environment for each running loop when none is installed.
"""

from __future__ import annotations

import asyncio

from cache.aio.budget import AsyncClerkBudget
from cache.aio.clerk import AsyncClerkClient
from cache.aio.membership_cache import AsyncMembershipCache
from cache.budget import BudgetPolicy, Priority
from cache.config import Settings
from cache.connections import RedisTarget, async_cache_redis
from cache.contract import Membership
from cache.durability import ReplicaWait, WaitPolicy
from cache.near import NearCache, near_cache_from_settings


def build_cache(settings: Settings) -> AsyncMembershipCache:
    """An async cache with its own fail-fast Redis client (through Sentinel when configured) and httpx client."""
    target = RedisTarget.from_settings(settings)
    redis = async_cache_redis(target)
    budget = AsyncClerkBudget(redis, BudgetPolicy.from_settings(settings))
    durable = ReplicaWait(WaitPolicy.from_settings(settings))
    return AsyncMembershipCache(
        redis,
        AsyncClerkClient(
            settings.clerk_secret_key, settings.clerk_api_url, budget=budget, priority=Priority.INTERACTIVE
        ),
        ttl_seconds=settings.user_orgs_ttl_seconds,
        durable=durable,
        near=_process_near(settings, target, durable),
    )


_near: dict[tuple[object, ...], NearCache | None] = {}


def _process_near(settings: Settings, target: RedisTarget, durable: ReplicaWait) -> NearCache | None:
    """One near-cache per process and configuration, shared by every loop's cache: its threads and
    clients are blocking ones of its own, so it belongs to no event loop (and one registration serves all)."""
    key = (target, settings.near_cache_size, settings.near_cache_lease_ms)
    if key not in _near:
        _near[key] = near_cache_from_settings(settings, target, durable)
    return _near[key]


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
