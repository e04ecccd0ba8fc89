"""The membership cache for asyncio app code (FastAPI, Starlette, Quart, Django's async views).

Same Redis contract, Lua scripts, leases, circuit breaker, Clerk retries, paging and
budget, metrics and errors as `cache`: the decisions are the very programs of
`cache.read_path`, `cache.clerk` and `cache.budget`, carried out by `cache.aio.io` over
``redis.asyncio`` and ``httpx.AsyncClient``; nothing here blocks the event loop. The
modules mirror the sync ones file for file: `cache.aio.io`, `cache.aio.budget`,
`cache.aio.clerk`, `cache.aio.membership_cache` and `cache.aio.default`; this module only
re-exports.

Needs the ``async`` extra: ``pip install 'clerk-org-cache[async]'`` (httpx). Build one
cache per event loop; its clients belong to that loop.
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401  (checked here, so a missing extra says which one)
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("cache.aio needs httpx: pip install 'clerk-org-cache[async]'") from exc

from cache.aio.budget import AsyncClerkBudget
from cache.aio.clerk import AsyncClerkClient
from cache.aio.default import (
    build_cache,
    default_cache,
    get_cached_user_org_memberships,
    get_user_org_membership,
    invalidate_user_org_memberships,
    set_default_cache,
)
from cache.aio.membership_cache import AsyncMembershipCache

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
