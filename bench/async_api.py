"""The async API (`cache.aio`) on one event loop, each figure against a baseline from the same run.

1. hit         AsyncMembershipCache.get_memberships on a warm key  vs  redis.asyncio GET + json.loads
2. stampede    1,000 concurrent cold lookups of one user on one loop  ->  Clerk calls
3. loop lag    a storm of misses (distinct cold users arriving at a steady rate, Clerk at 60 ms) while a
               ticking task measures how late the loop wakes it: the async API  vs  the sync API called
               from the same loop (what app code on asyncio had before)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.asyncio import Redis as AsyncRedis

from bench.stats import percentile, summarize
from cache import MembershipCache
from cache.aio import AsyncClerkBudget, AsyncClerkClient, AsyncMembershipCache
from cache.budget import BudgetPolicy
from cache.connections import async_cache_redis
from cache.contract import user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from tests.support import CLERK_KEY

TICK_S = 0.001


def async_cache(redis_url: str, clerk_url: str, budget: BudgetPolicy | None = None) -> AsyncMembershipCache:
    """As `cache.aio.build_cache` builds it: each Clerk call first takes the fleet's budget."""
    redis = async_cache_redis(redis_url)
    clerk = AsyncClerkClient(CLERK_KEY, clerk_url, budget=AsyncClerkBudget(redis, budget or BudgetPolicy()))
    return AsyncMembershipCache(redis, clerk)


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter_ns()
    await call()
    return (time.perf_counter_ns() - started) / 1000


async def hit(redis_url: str, clerk_url: str, user_id: str, n: int, reps: int) -> dict[str, float]:
    """Alternating call by call, like bench.stats.p50_p99_over_reps, on one loop."""
    cache = async_cache(redis_url, clerk_url)
    raw = AsyncRedis.from_url(redis_url)
    key = user_orgs_key(user_id)
    await cache.get_memberships(user_id)

    async def baseline() -> object:
        return json.loads(await raw.get(key) or b"")

    repetitions = []
    for _ in range(reps):
        ours, base = [], []
        for _ in range(n):
            base.append(await _timed(baseline))
            ours.append(await _timed(lambda: cache.get_memberships(user_id)))
        repetitions.append((ours, base))
    await cache.aclose()
    await raw.aclose()
    return summarize(repetitions)


async def stampede(redis_url: str, clerk: ClerkStandIn, user_id: str, lookups: int = 1000) -> dict[str, Any]:
    cache = async_cache(redis_url, clerk.url)
    clerk.reset_counts()
    answers = await asyncio.gather(*(cache.get_memberships(user_id) for _ in range(lookups)))
    stats = cache.stats.snapshot()
    await cache.aclose()
    return {
        "lookups": lookups,
        "clerk_calls": clerk.call_count("/v1/users/"),
        "answered": sum(1 for a in answers if a),
        "coalesced": stats["coalesced"],
    }


async def _lag_during(storm: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """How late a task asking to wake every ms is woken while ``storm`` runs (ms)."""
    lags: list[float] = []
    running = True

    async def tick() -> None:
        while running:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append((time.perf_counter() - started - TICK_S) * 1000)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    lags.clear()
    try:
        await storm()
    finally:
        running = False
        await ticker
    return {"p50_ms": percentile(lags, 50), "p99_ms": percentile(lags, 99), "max_ms": max(lags), "ticks": len(lags)}


async def loop_lag(
    redis_url: str, clerk_url: str, users: list[str], per_second: float, sync_cache: MembershipCache
) -> dict[str, Any]:
    """The same storm twice: the async API, then the sync API called from the loop (the baseline: at most
    100 misses, which at Clerk's 60 ms already stall the loop for seconds)."""
    half = len(users) // 2
    # the budget lifted (as in the drain rows): 1,000 misses in 5 s are more than Clerk's limit allows, and
    # lookups refused for budget would measure the budget, not the loop
    cache = async_cache(redis_url, clerk_url, BudgetPolicy(limit=100_000))
    errors: list[int] = []

    async def storm(lookup: Callable[[str], Coroutine[Any, Any, object]], cold: list[str]) -> None:
        tasks = []
        started = time.perf_counter()
        for i, user_id in enumerate(cold):  # a steady arrival rate, as requests reach a server
            delay = started + i / per_second - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(lookup(user_id)))
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors.append(sum(1 for o in outcomes if isinstance(o, BaseException)))

    async def blocking(user_id: str) -> object:
        return sync_cache.get_memberships(user_id)  # what calling the sync API from a coroutine does

    ours = await _lag_during(lambda: storm(cache.get_memberships, users[:half]))
    base = await _lag_during(lambda: storm(blocking, users[half : half + 100]))
    await cache.aclose()
    return {
        "misses": half,
        "sync_misses": min(100, len(users) - half),
        "per_second": per_second,
        "async_p99_ms": ours["p99_ms"],
        "async_max_ms": ours["max_ms"],
        "sync_p99_ms": base["p99_ms"],
        "sync_max_ms": base["max_ms"],
        "async_errors": errors[0],
        "sync_errors": errors[1],
    }


def async_lines(r: dict[str, Any]) -> list[str]:
    h, s, lag = r["async_hit"], r["async_stampede"], r["async_loop_lag"]
    return [
        f"async hit p50: {h['ours_p50_us']:.0f} µs vs redis.asyncio GET+loads {h['baseline_p50_us']:.0f} µs "
        f"({h['ratio_p50']:.2f}x, goal ≤ 1.3x); p99 {h['ours_p99_us']:.0f} vs {h['baseline_p99_us']:.0f} µs",
        f"async stampede: {s['lookups']} concurrent cold lookups of one user on one loop -> "
        f"{s['clerk_calls']} Clerk call(s), {s['coalesced']} shared the first lookup (goal 1 call)",
        f"event-loop lag during {lag['misses']} misses at {lag['per_second']:.0f}/s (Clerk 60 ms): async API "
        f"p99 {lag['async_p99_ms']:.2f} ms (max {lag['async_max_ms']:.1f}) vs sync API from the loop "
        f"({lag['sync_misses']} misses) p99 {lag['sync_p99_ms']:.1f} ms (max {lag['sync_max_ms']:.1f}); "
        f"goal < 5 ms; errors {lag['async_errors']} (async), {lag['sync_errors']} (sync)",
    ]
