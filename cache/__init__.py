"""Cached answers to "which Clerk organizations is this user in, with which role?".

App code calls the module-level functions, which use one process-wide
`MembershipCache` built from the environment on first use (``REDIS_URL``,
``CLERK_SECRET_KEY``, ``CLERK_API_URL``, ``USER_ORGS_TTL_SECONDS``; see `cache.default`).
Code that wants its own clients builds a `MembershipCache` and, optionally, installs it
with `set_default_cache`. App code on asyncio uses `cache.aio` instead (the same cache
over ``redis.asyncio`` and httpx, laid out module for module as this package);
`cache.authz` checks org roles in Flask, FastAPI, Django and DRF.

This module only re-exports: each name lives in the module named after its job.
"""

from __future__ import annotations

from cache.clerk import ClerkClient
from cache.contract import Membership
from cache.default import (
    build_cache,
    default_cache,
    get_cached_user_org_memberships,
    get_user_org_membership,
    invalidate_user_org_memberships,
    set_default_cache,
)
from cache.errors import (
    CacheUnavailable,
    ClerkAuthError,
    ClerkCacheError,
    ClerkError,
    ClerkNotFound,
    ClerkRateLimited,
    ClerkUnavailable,
    ConfigError,
    InvalidId,
    NotReplicated,
)
from cache.membership_cache import MembershipCache

__all__ = [
    "CacheUnavailable",
    "ClerkAuthError",
    "ClerkCacheError",
    "ClerkClient",
    "ClerkError",
    "ClerkNotFound",
    "ClerkRateLimited",
    "ClerkUnavailable",
    "ConfigError",
    "InvalidId",
    "Membership",
    "MembershipCache",
    "NotReplicated",
    "build_cache",
    "default_cache",
    "get_cached_user_org_memberships",
    "get_user_org_membership",
    "invalidate_user_org_memberships",
    "set_default_cache",
]
