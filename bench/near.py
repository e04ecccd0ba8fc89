"""The near-cache (cache/near.py), for ``./dev bench``: what a local hit costs, and what it costs the intake.

near hit       A warm lookup of a user in 3 orgs served from the in-process tier
               (``MembershipCache(near=NearCache(...))``, registered on the private redis-server), against
               two baselines of the same run, each alternating with it call by call: a bare dict lookup of
               the same list (``d[user_id]``), and today's hit (the same lookup through a cache without a
               near-cache: one Redis round trip).
async hit      The same with `cache.aio.AsyncMembershipCache` (``await cache.get_memberships``, timed
               inside the event loop), against the async cache's Redis hit.
commands       Redis commands the server ran (INFO commandstats, summed) across 1,000 local hits, and per
               second with the process idle (its lease renewals: one script every L/4).
intake         p50/p99 of the Procfile's web process (gunicorn) answering signed membership events one at
               a time, with 0, 1, 4 and 16 app processes (tests/near_app.py) registered, each of which must
               acknowledge every event before its 2xx.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import requests
from redis import Redis

from bench.stats import p50_p99_over_reps, percentile, summarize
from cache import ClerkClient, MembershipCache
from cache.connections import cache_redis
from cache.contract import NEAR_CACHES_KEY
from cache.near import NearCache
from devstack.clerk_standin import ClerkStandIn
from devstack.signing import new_message_id, signed_event
from devstack.stack import REPO
from devstack.waiting import wait_until
from tests.support import CLERK_KEY, SIGNING_SECRET, near_app_env, procfile_process, stack_env

LEASE_MS = 2000


def _commands(redis: Redis) -> int:
    stats: dict[str, Any] = redis.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def _scripts(redis: Redis) -> int:
    stats: dict[str, Any] = redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _seed(clerk: ClerkStandIn, user_id: str, n_orgs: int) -> None:
    for i in range(n_orgs):
        org = clerk.create_org(f"near {user_id[-4:]} {i}")["data"]["id"]
        clerk.add_membership(user_id, org)


def near_hits(redis_url: str, clerk: ClerkStandIn, quick: bool) -> dict[str, Any]:
    user_id = "user_2benchnear000001"
    _seed(clerk, user_id, 3)
    raw = Redis.from_url(redis_url)
    near = NearCache(redis_url, size=10_000, lease_ms=LEASE_MS)
    ours = MembershipCache(cache_redis(redis_url), ClerkClient(CLERK_KEY, clerk.url), near=near)
    today = MembershipCache(cache_redis(redis_url), ClerkClient(CLERK_KEY, clerk.url))
    try:
        assert near.wait_serving(10), "the near-cache did not register"
        ours.get_memberships(user_id)
        assert ours.get_memberships(user_id) and near.stats.hits == 1, "not served locally"
        today.get_memberships(user_id)
        plain = {user_id: list(ours.get_memberships(user_id))}
        n, reps = (2000, 3) if quick else (20_000, 7)
        vs_dict = p50_p99_over_reps(lambda: ours.get_memberships(user_id), lambda: plain[user_id], n, reps)
        n_redis = 500 if quick else 3000
        vs_redis = p50_p99_over_reps(lambda: ours.get_memberships(user_id), lambda: today.get_memberships(user_id),
                                     n_redis, reps)  # fmt: skip
        before = _commands(raw)
        for _ in range(1000):
            ours.get_memberships(user_id)
        per_1000 = _commands(raw) - before - 1  # the INFO itself
        before, scripts, started = _commands(raw), _scripts(raw), time.monotonic()
        time.sleep(2.0)
        idle_per_s = (_commands(raw) - before - 2) / (time.monotonic() - started)  # the two INFOs
        idle_round_trips_per_s = (_scripts(raw) - scripts) / (time.monotonic() - started)
        asynchronous = asyncio.run(_async_hits(redis_url, clerk.url, user_id, near, quick))
    finally:
        near.close()
        raw.close()
    return {
        "sync_vs_dict": vs_dict,
        "sync_vs_redis_hit": vs_redis,
        "async": asynchronous,
        "redis_commands_per_1000_hits": per_1000,
        "redis_commands_per_s_idle": idle_per_s,  # commandstats counts the commands inside each script too
        "redis_round_trips_per_s_idle": idle_round_trips_per_s,
    }


async def _async_hits(redis_url: str, clerk_url: str, user_id: str, near: NearCache, quick: bool) -> dict[str, float]:
    from redis.asyncio import Redis as AsyncRedis

    from cache.aio import AsyncClerkClient, AsyncMembershipCache

    ours = AsyncMembershipCache(AsyncRedis.from_url(redis_url), AsyncClerkClient(CLERK_KEY, clerk_url), near=near)
    today = AsyncMembershipCache(AsyncRedis.from_url(redis_url), AsyncClerkClient(CLERK_KEY, clerk_url))
    try:
        await ours.get_memberships(user_id)
        await today.get_memberships(user_id)
        n, reps = (500, 3) if quick else (3000, 7)
        repetitions = []
        for _ in range(reps):
            o: list[float] = []
            b: list[float] = []
            for _ in range(n):
                start = time.perf_counter_ns()
                await today.get_memberships(user_id)
                b.append((time.perf_counter_ns() - start) / 1000)
                start = time.perf_counter_ns()
                await ours.get_memberships(user_id)
                o.append((time.perf_counter_ns() - start) / 1000)
            repetitions.append((o, b))
        return summarize(repetitions)
    finally:
        await ours.aclose()
        await today.aclose()


def _event(i: int) -> dict[str, Any]:
    return {
        "type": "organizationMembership.updated",
        "object": "event",
        "data": {
            "organization": {"id": "org_2benchnear"},
            "public_user_data": {"user_id": f"user_2benchnear{i:06d}"},
            "role": "org:member",
        },
    }


def intake_with_near(redis_url: str, clerk: ClerkStandIn, quick: bool) -> dict[str, Any]:
    redis = Redis.from_url(redis_url)
    env = stack_env(redis_url, clerk, WEB_CONCURRENCY="2")
    url = f"http://127.0.0.1:{env['PORT']}/webhooks/clerk"
    n, reps = (100, 1) if quick else (300, 3)
    rounds: dict[str, list[tuple[float, float]]] = {}
    session = requests.Session()
    counter = 0
    try:
        with procfile_process("web", env):
            wait_until(lambda: _answers(f"http://127.0.0.1:{env['PORT']}/healthz"), 60, what="gunicorn", poll_s=0.1)
            for processes in [0, 1, 4, 16] * reps:  # repetitions interleaved: this machine's noise hits all alike
                with ExitStack() as stack:
                    apps = [
                        subprocess.Popen(
                            [sys.executable, "-m", "tests.near_app", "sync"],
                            cwd=REPO,
                            env=near_app_env(redis_url, clerk, LEASE_MS),
                            stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL,
                        )
                        for _ in range(processes)
                    ]
                    for app in apps:
                        stack.callback(app.kill)
                    wait_until(lambda n=processes: redis.zcard(NEAR_CACHES_KEY) == n, 60, poll_s=0.05)  # type: ignore[misc]
                    timings = []
                    for _ in range(n // 10):  # warm up
                        counter += 1
                        _post(session, url, _event(counter))
                    for _ in range(n):
                        counter += 1
                        started = time.perf_counter()
                        status = _post(session, url, _event(counter))
                        timings.append((time.perf_counter() - started) * 1000)
                        assert status == 200, status
                    for app in apps:
                        app.terminate()
                    for app in apps:
                        app.wait(10)
                    redis.delete(NEAR_CACHES_KEY)  # the killed apps' leases: not the next round's
                rounds.setdefault(str(processes), []).append((percentile(timings, 50), percentile(timings, 99)))
    finally:
        redis.close()
    return {
        k: {"p50_ms": statistics.median(p for p, _ in v), "p99_ms": statistics.median(p for _, p in v), "reps": len(v)}
        for k, v in rounds.items()
    }


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _post(session: requests.Session, url: str, event: dict[str, Any]) -> int:
    body, headers = signed_event(SIGNING_SECRET, event, msg_id=new_message_id())
    return session.post(url, data=body, headers=headers, timeout=15).status_code


def near_lines(r: dict[str, Any]) -> list[str]:
    if "near_hit" not in r:
        return []
    h = r["near_hit"]
    d, s, a = h["sync_vs_dict"], h["sync_vs_redis_hit"], h["async"]
    lines = [
        f"near-cache hit p50 (sync): {d['ours_p50_us']:.2f} µs (goal ≤ 5); {d['ratio_p50']:.1f}x a bare dict lookup "
        f"({d['baseline_p50_us']:.2f} µs); {1 / s['ratio_p50']:.0f}x faster than today's Redis hit "
        f"({s['baseline_p50_us']:.0f} µs, ratio {s['ratio_p50']:.3f}); p99 {d['ours_p99_us']:.2f} µs",
        f"near-cache hit p50 (async): {a['ours_p50_us']:.2f} µs (goal ≤ 10) vs the async Redis hit "
        f"{a['baseline_p50_us']:.0f} µs (ratio {a['ratio_p50']:.3f})",
        f"Redis commands per 1,000 local hits: {h['redis_commands_per_1000_hits']}; idle, per process: "
        f"{h['redis_round_trips_per_s_idle']:.1f} round trips/s (a renewal script every L/4), "
        f"{h['redis_commands_per_s_idle']:.0f} commands/s in commandstats",
    ]
    if "near_intake" in r:
        lines.append(
            "intake p50/p99 with registered near-caches: "
            + ", ".join(f"{k}: {v['p50_ms']:.2f}/{v['p99_ms']:.2f} ms" for k, v in r["near_intake"].items())
        )
    return lines


def main() -> int:
    """``python -m bench.near [--quick]``: these steps alone, on a private Redis and Clerk stand-in."""
    from devstack.redis_server import RedisServer

    quick = "--quick" in sys.argv[1:]
    with RedisServer() as server, ClerkStandIn(secret_key=CLERK_KEY) as clerk:
        r = {"near_hit": near_hits(server.url, clerk, quick)}
        Redis.from_url(server.url).flushall()
        r["near_intake"] = intake_with_near(server.url, clerk, quick)
    print(json.dumps(r, indent=2))
    print("\n".join(near_lines(r)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
