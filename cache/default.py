"""The process's default cache: what the module-level functions of `cache` look up with.

It is one process-wide `MembershipCache`, built from the environment on first use
(``REDIS_URL``, ``CLERK_SECRET_KEY``, ``CLERK_API_URL``, ``USER_ORGS_TTL_SECONDS``, and
``NEAR_CACHE_SIZE`` / ``NEAR_CACHE_LEASE_MS`` for the in-process tier, off by default) or
installed with `set_default_cache`. It is a singleton on purpose: app code can then ask
``cache.get_user_org_membership(...)`` without wiring anything, and a blocking cache is
meant to be shared by every thread of the process (one Redis pool, one HTTP session, one
breaker). `cache.aio.default` is the asyncio twin, which needs one cache per event loop.
"""

from __future__ import annotations

import threading

from cache.budget import BudgetPolicy, ClerkBudget, Priority
from cache.clerk import ClerkClient
from cache.config import Settings
from cache.connections import RedisTarget, cache_redis
from cache.contract import Membership
from cache.durability import ReplicaWait, WaitPolicy
from cache.membership_cache import MembershipCache
from cache.near import near_cache_from_settings

_default: MembershipCache | None = None
_default_lock = threading.Lock()


def build_cache(settings: Settings) -> MembershipCache:
    """A cache with its own fail-fast Redis client (through Sentinel when configured) and Clerk session."""
    target = RedisTarget.from_settings(settings)
    redis = cache_redis(target)
    budget = ClerkBudget(redis, BudgetPolicy.from_settings(settings))
    durable = ReplicaWait(WaitPolicy.from_settings(settings))
    return MembershipCache(
        redis,
        ClerkClient(settings.clerk_secret_key, settings.clerk_api_url, budget=budget, priority=Priority.INTERACTIVE),
        ttl_seconds=settings.user_orgs_ttl_seconds,
        durable=durable,
        near=near_cache_from_settings(settings, target, durable),
    )


def default_cache() -> MembershipCache:
    """The process-wide cache, built from the environment on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = build_cache(Settings.from_env(process="library"))
    return _default


def set_default_cache(cache: MembershipCache | None) -> None:
    """Install ``cache`` for the module-level functions (None: rebuild from env next time)."""
    global _default
    with _default_lock:
        _default = cache


def get_cached_user_org_memberships(user_id: str) -> list[Membership]:
    """All of the user's memberships, from Redis when cached, else from Clerk."""
    return default_cache().get_memberships(user_id)


def get_user_org_membership(user_id: str, organization_id: str) -> Membership | None:
    """The user's membership in one organization, or None if not a member."""
    return default_cache().get_membership(user_id, organization_id)


def invalidate_user_org_memberships(user_id: str) -> None:
    """Drop the user's cached memberships now (raises CacheUnavailable if Redis is down)."""
    default_cache().invalidate(user_id)
