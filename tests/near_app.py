"""An app process with a near-cache, driven over stdin/stdout one JSON line per command (tests/test_near_cache.py).

    python -m tests.near_app sync|async

It builds its cache as app code does (`cache.build_cache` / `cache.aio.build_cache` from the
environment: REDIS_URL, CLERK_*, NEAR_CACHE_SIZE, NEAR_CACHE_LEASE_MS), except that with
NEAR_REDIS_URL set its near-cache's control plane uses that Redis address while lookups use
REDIS_URL (so a test can slow the lookups' replies alone), and LOOKUP_SOCKET_TIMEOUT_S raises the
lookup client's read timeout. Commands (one per line), each answered with one JSON line:

    get <user_id>        {"orgs": {org_id: [role, permissions...]}, "local": was it a local hit}
    holds <user_id>      {"holds": whether the tier holds the user (without serving it)}
    stats                the near-cache's counters, id, generation, epoch, whether it serves
    serving <timeout_s>  {"serving": bool} once it serves (or the timeout passed)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from cache import ClerkClient, MembershipCache
from cache.config import Settings
from cache.connections import RedisTarget, Role, redis_client
from cache.contract import Membership
from cache.durability import ReplicaWait, WaitPolicy
from cache.near import NearCache, near_cache_from_settings


def _target(settings: Settings) -> RedisTarget:
    """The lookups' Redis: REDIS_URL, or the primary the sentinels name (REDIS_SENTINELS)."""
    return RedisTarget.from_settings(settings)


def _near(settings: Settings) -> NearCache:
    near_url = os.environ.get("NEAR_REDIS_URL")
    target = RedisTarget(near_url) if near_url else _target(settings)
    near = near_cache_from_settings(settings, target, ReplicaWait(WaitPolicy.from_settings(settings)))
    assert near is not None, "NEAR_CACHE_SIZE must be set"
    return near


def _lookup_options() -> dict[str, Any]:
    timeout = os.environ.get("LOOKUP_SOCKET_TIMEOUT_S")
    return {"socket_timeout": float(timeout)} if timeout else {}


def _view(memberships: list[Membership]) -> dict[str, list[str]]:
    """Per org: its name, the role, then the permissions."""
    return {m.organization_id: [m.organization_name or "", m.role, *m.permissions] for m in memberships}


def _stats(near: NearCache) -> dict[str, Any]:
    return {
        **asdict(near.stats),
        "id": near.near_id,
        "generation": near.generation,
        "epoch": near.epoch,
        "serving": near.serving,
        "size": len(near),
    }


def _answer(near: NearCache, command: str, args: list[str], lookup: Any) -> Any:
    if command == "holds":
        return {"holds": args[0] in near._entries}
    if command == "stats":
        return _stats(near)
    if command == "serving":
        return {"serving": near.wait_serving(float(args[0]))}
    raise ValueError(f"unknown command {command!r}")


def run_sync() -> None:
    settings = Settings.from_env(process="library")
    near = _near(settings)
    cache = MembershipCache(
        redis_client(_target(settings), Role.LOOKUP, **_lookup_options()),
        ClerkClient(settings.clerk_secret_key, settings.clerk_api_url),
        ttl_seconds=settings.user_orgs_ttl_seconds,
        near=near,
    )
    for line in sys.stdin:
        command, *args = line.split()
        if command == "get":
            before = near.stats.hits
            answer: Any = {"orgs": _view(cache.get_memberships(args[0])), "local": near.stats.hits > before}
        else:
            answer = _answer(near, command, args, None)
        print(json.dumps(answer), flush=True)


async def run_async() -> None:
    from redis.asyncio import Redis as AsyncRedis

    from cache.aio import AsyncClerkClient, AsyncMembershipCache

    settings = Settings.from_env(process="library")
    near = _near(settings)
    cache = AsyncMembershipCache(
        AsyncRedis.from_url(settings.redis_url, socket_timeout=float(os.environ.get("LOOKUP_SOCKET_TIMEOUT_S", 0.5))),
        AsyncClerkClient(settings.clerk_secret_key, settings.clerk_api_url),
        ttl_seconds=settings.user_orgs_ttl_seconds,
        near=near,
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command, *args = line.split()
        if command == "get":
            before = near.stats.hits
            answer: Any = {"orgs": _view(await cache.get_memberships(args[0])), "local": near.stats.hits > before}
        else:
            answer = await loop.run_in_executor(None, _answer, near, command, args, None)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["async"]:
        asyncio.run(run_async())
    else:
        run_sync()
