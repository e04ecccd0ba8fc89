"""``./dev bench``: the benchmark suite. Prints a table and writes JSON.

Every figure is paired with a baseline measured in the same run, on the same
machine, against the same private redis-server and Clerk stand-in:

1. hit          get_cached_user_org_memberships on a warm key  vs  redis-py GET + json.loads
2. miss         a cold lookup, Clerk at 60 ms                   vs  a bare requests call to Clerk
3. stampede     50 concurrent cold lookups of one user          ->  Clerk calls
4. intake       signed distinct events/s on the Procfile's web  vs  GET /healthz on the same server
5. revocation   2xx of organizationMembership.deleted -> first lookup without the org
6. fan-out      organization.updated, 1,000 cached members      ->  time until all are fixed
7. drain        1,000 events for 1,000 distinct cached users    ->  events/s until every key reflects Clerk
8. redis down   a lookup with Redis stopped                     vs  a bare requests call to Clerk
9. curves       hit latency vs orgs per user; drain rate vs REFRESH_CONCURRENCY and worker processes
10. sizing      Redis memory per cached user (1, 10, 100 orgs); hits/s one redis-server gives 1, 2, 4
                client processes, and its CPU (bench/sizing.py)
11. budget      Clerk enforcing 1,000 / 10 s: cold lookups at 10/s during a 1,500-user re-warm
                storm vs the same lookups without it, at Clerk 30 and 60 ms with 1 and 2 worker
                processes; p99 ratio, maximum, 429s, re-warm rate (bench/clerk_budget.py)
12. async       cache.aio: hit vs redis.asyncio GET + json.loads; 1,000 concurrent cold lookups of one
                user -> Clerk calls; event-loop lag during a storm of misses vs the sync API called
                from the loop (bench/async_api.py)
13. django      what @require_org_role adds to a Django request (sync view, async view; warm cache) vs
                the same view without it, against the same lookup in the same view (bench/django_authz.py)
14. roles       role.updated for a role 1,000 cached users hold -> time until every value carries the new
                permissions, and Clerk calls; a hit on a value with 8 permissions per org vs the same
                lookup of a value with none (bench/role_patch.py)
15. near        the near-cache: a local hit (sync, async) vs a bare dict lookup and vs today's Redis hit;
                Redis commands per 1,000 local hits; intake p50/p99 with 0, 1, 4 and 16 registered app
                processes (bench/near.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as redis_py
import requests
from redis import Redis

from bench import async_api, django_authz, near, role_patch
from bench.async_api import async_lines
from bench.clerk_budget import budget_line, budget_under_storms
from bench.loadgen import fire, raw_request
from bench.sizing import hits_vs_processes, memory_per_user, sizing_lines
from bench.stats import p50_p99_over_reps, percentile
from cache import ClerkClient, MembershipCache
from cache.budget import BudgetPolicy, ClerkBudget
from cache.connections import cache_redis
from cache.contract import user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import sign, signed_event
from devstack.stack import REPO, LocalStack
from devstack.waiting import wait_until
from tests.support import (
    CLERK_KEY,
    SIGNING_SECRET,
    concurrent_lookups,
    make_cache,
    procfile_process,
    stack_env,
    unreachable_redis_url,
)

CLERK_LATENCY_S = 0.060


def user(i: int) -> str:
    return f"user_2bench{i:06d}"


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.redis_server = RedisServer().start()
        self.clerk = ClerkStandIn(secret_key=CLERK_KEY).start()
        self.redis = Redis.from_url(self.redis_server.url)
        self.results: dict[str, Any] = {}

    def close(self) -> None:
        self.clerk.stop()
        self.redis_server.close()

    def cache(self, url: str | None = None) -> MembershipCache:
        return make_cache(url or self.redis_server.url, self.clerk.url)

    def reset(self, latency_s: float = 0.0) -> None:
        self.redis.flushall()
        self.clerk.latency_s = latency_s

    def seed(self, user_id: str, n_orgs: int, prefix: str = "o") -> list[str]:
        orgs = []
        for i in range(n_orgs):
            org = self.clerk.create_org(f"{prefix} {i}")["data"]["id"]
            self.clerk.add_membership(user_id, org)
            orgs.append(org)
        return orgs

    @contextmanager
    def stack(self, **env: str) -> Iterator[LocalStack]:
        full = stack_env(self.redis_server.url, self.clerk, **env)
        with open(REPO / ".devstack" / "bench-stack.log", "ab") as log, LocalStack(full, log=log) as stack:
            yield stack

    def bare_clerk_call(self, user_id: str) -> Callable[[], None]:
        """The baseline of a miss: one plain requests call for the user's memberships."""
        session = requests.Session()
        url = f"{self.clerk.url}/v1/users/{user_id}/organization_memberships"

        def call() -> None:
            session.get(
                url, params={"limit": 500, "offset": 0}, headers={"Authorization": f"Bearer {CLERK_KEY}"}
            ).json()

        return call

    # -- 1. hit ---------------------------------------------------------------------

    def hit(self, n_orgs: int = 3) -> dict[str, float]:
        self.reset()
        user_id = user(n_orgs)
        self.seed(user_id, n_orgs, prefix=f"hit{n_orgs}")
        cache = self.cache()
        cache.get_memberships(user_id)
        raw = Redis.from_url(self.redis_server.url)
        key = user_orgs_key(user_id)
        n, reps = (500, 3) if self.quick else (3000, 7)
        return p50_p99_over_reps(
            lambda: cache.get_memberships(user_id), lambda: json.loads(raw.get(key) or b""), n, reps
        )

    # -- 2. miss and 3. stampede --------------------------------------------------------

    def miss(self) -> dict[str, float]:
        self.reset(CLERK_LATENCY_S)
        user_id = user(1)
        self.seed(user_id, 3, prefix="miss")
        # as app code builds it (`cache.build_cache`): each Clerk call first takes the fleet's budget
        redis = cache_redis(self.redis_server.url)
        budget = ClerkBudget(redis, BudgetPolicy())
        cache = MembershipCache(redis, ClerkClient(CLERK_KEY, self.clerk.url, budget=budget))

        def cold() -> None:
            self.redis.delete(user_orgs_key(user_id))
            cache.get_memberships(user_id)

        n, reps = (10, 3) if self.quick else (30, 5)
        result = p50_p99_over_reps(cold, self.bare_clerk_call(user_id), n, reps)
        result["overhead_p50_ms"] = (result["ours_p50_us"] - result["baseline_p50_us"]) / 1000
        return result

    def stampede(self) -> dict[str, float]:
        self.reset(CLERK_LATENCY_S)
        user_id = user(2)
        self.seed(user_id, 3, prefix="stampede")
        cache = self.cache()
        self.clerk.reset_counts()
        concurrent_lookups(cache, user_id, 50)
        stats = cache.stats.snapshot()
        return {"clerk_calls": self.clerk.call_count(), "wait_fallbacks": stats["wait_fallbacks"]}

    # -- 4. intake -------------------------------------------------------------------

    def intake(self) -> dict[str, float]:
        self.reset()
        n = 3000 if self.quick else 12000
        events = []
        for i in range(n):
            body = json.dumps(
                {
                    "type": "organizationMembership.updated",
                    "object": "event",
                    "data": {
                        "organization": {"id": "org_2bench"},
                        "public_user_data": {"user_id": user(100_000 + i)},
                        "role": "org:member",
                    },
                }
            )
            events.append(raw_request("POST", "/webhooks/clerk", sign(SIGNING_SECRET, body), body.encode()))
        healthz = [raw_request("GET", "/healthz", {})] * n
        seconds = 3.0 if self.quick else 8.0
        with self.stack(WEB_CONCURRENCY="2") as stack:
            fire(stack.port, healthz[:200])  # warm up
            base = fire(stack.port, healthz, max_seconds=seconds)
            ours = fire(stack.port, events, max_seconds=seconds)
        return {
            "events_per_s": ours["per_second"],
            "healthz_per_s": base["per_second"],
            "ratio": ours["per_second"] / base["per_second"],
            "failed": ours["failed"] + base["failed"],
        }

    # -- 5. revocation ------------------------------------------------------------------

    def revocation(self) -> dict[str, float]:
        """Staleness after the 2xx: how long lookups keep returning the removed org (0 when the intake
        invalidates in its own transaction), and what the first lookup after it costs (a miss)."""
        self.reset(CLERK_LATENCY_S)
        user_id = user(3)
        orgs = self.seed(user_id, 2, prefix="revoke")
        cache = self.cache()
        session = requests.Session()
        rounds = 10 if self.quick else 50
        stale_lookups = 0
        stale_ms: list[float] = []
        first_lookup_ms: list[float] = []
        with self.stack() as stack:
            for _ in range(rounds):
                cache.get_memberships(user_id)
                body, headers = signed_event(SIGNING_SECRET, self.clerk.remove_membership(user_id, orgs[0]))
                response = session.post(stack.url + "/webhooks/clerk", data=body, headers=headers)
                acked = time.perf_counter()
                assert response.status_code == 200
                last_stale_start = None
                while True:
                    started = time.perf_counter()
                    if cache.get_membership(user_id, orgs[0]) is None:
                        break
                    stale_lookups += 1
                    last_stale_start = started
                first_lookup_ms.append((time.perf_counter() - started) * 1000)
                stale_ms.append(0.0 if last_stale_start is None else (last_stale_start - acked) * 1000)
                self.clerk.add_membership(user_id, orgs[0])
                cache.invalidate(user_id)
        return {
            "rounds": rounds,
            "stale_lookups_after_2xx": stale_lookups,
            "staleness_p99_ms": percentile(stale_ms, 99),
            "first_lookup_p50_ms": percentile(first_lookup_ms, 50),
        }

    # -- 6. fan-out and 7. drain ----------------------------------------------------------

    def cached_org(self, name: str, first_user: int, members: int) -> tuple[str, list[str]]:
        """A fresh org whose ``members`` are all cached, with Clerk answering at once."""
        self.reset(0)
        org = self.clerk.create_org(name)["data"]["id"]
        users = [user(first_user + i) for i in range(members)]
        cache = self.cache()
        for user_id in users:
            self.clerk.add_membership(user_id, org)
            cache.get_memberships(user_id)
        return org, users

    def fan_out(self, members: int = 1000, latency_s: float = CLERK_LATENCY_S) -> dict[str, float]:
        org, users = self.cached_org("Fan Out", 200_000, members)
        self.clerk.latency_s = latency_s
        with self.stack() as stack:
            body, headers = signed_event(SIGNING_SECRET, self.clerk.update_org(org, name="Fan Out Renamed"))
            assert requests.post(stack.url + "/webhooks/clerk", data=body, headers=headers).status_code == 200
            acked = time.perf_counter()
            keys = [user_orgs_key(u) for u in users]
            wait_until(lambda: all(v and b"Fan Out Renamed" in v for v in self.redis.mget(keys)), 120, poll_s=0.005)
            seconds = time.perf_counter() - acked
        return {"members": members, "clerk_latency_ms": latency_s * 1000, "seconds_until_all_fixed": seconds}

    def drain(
        self, events: int = 1000, latency_s: float = CLERK_LATENCY_S, concurrency: int = 8, workers: int = 1
    ) -> dict[str, float]:
        org, users = self.cached_org("Drain", 300_000, events)
        requests_ = []
        for user_id in users:
            body, headers = signed_event(SIGNING_SECRET, self.clerk.update_membership(user_id, org, "org:admin"))
            requests_.append(raw_request("POST", "/webhooks/clerk", headers, body.encode()))
        self.clerk.latency_s = latency_s
        # the worker's own throughput: the fleet's Clerk budget is lifted (this stand-in enforces no limit;
        # the clerk_budget step measures the limited case)
        with self.stack(REFRESH_CONCURRENCY=str(concurrency), CLERK_RATE_LIMIT="100000") as stack, ExitStack() as extra:
            for _ in range(workers - 1):  # more of the Procfile's worker, with the stack's environment
                extra.enter_context(procfile_process("worker", stack.env))
            started = time.perf_counter()
            sent = fire(stack.port, requests_, max_seconds=120)
            acked = time.perf_counter() - started
            keys = [user_orgs_key(u) for u in users]
            wait_until(lambda: all(v and b"org:admin" in v for v in self.redis.mget(keys)), 300, poll_s=0.005)
            done = time.perf_counter() - started
        assert sent["failed"] == 0
        return {
            "events": events,
            "clerk_latency_ms": latency_s * 1000,
            "refresh_concurrency": concurrency,
            "worker_processes": workers,
            "revoked_per_s": events / acked,
            "rewarmed_per_s": events / done,
        }

    # -- 8. redis down -------------------------------------------------------------------

    def redis_down(self) -> dict[str, float]:
        self.reset(0.020)
        user_id = user(4)
        self.seed(user_id, 3, prefix="down")
        cache = self.cache(unreachable_redis_url())
        cache.get_memberships(user_id)  # opens the breaker
        n, reps = (10, 3) if self.quick else (40, 5)
        result = p50_p99_over_reps(lambda: cache.get_memberships(user_id), self.bare_clerk_call(user_id), n, reps)
        result["overhead_p50_ms"] = (result["ours_p50_us"] - result["baseline_p50_us"]) / 1000
        return result

    # -- 13. Django ---------------------------------------------------------------------------

    def django_check(self) -> dict[str, Any]:
        self.reset()
        user_id = user(40)
        org = self.seed(user_id, 3, prefix="django")[0]
        n, reps = (300, 3) if self.quick else (2000, 5)
        return {
            "sync": django_authz.sync_check(self.cache(), user_id, org, n, reps),
            "async": django_authz.async_check(self.redis_server.url, self.clerk.url, user_id, org, n, reps),
        }

    # -- 14. roles and permissions ----------------------------------------------------------

    def role_updated(self) -> dict[str, Any]:
        self.reset()
        holders, reps = (200, 2) if self.quick else (1000, 5)
        return role_patch.role_updated(self.redis_server.url, self.clerk, holders, reps)

    def hit_permissions(self) -> dict[str, float]:
        self.reset()
        n, reps = (500, 3) if self.quick else (3000, 7)
        return role_patch.hit_with_permissions(self.redis_server.url, self.clerk, n, reps)

    # -- 12. the async API ------------------------------------------------------------------

    def async_hit(self) -> dict[str, float]:
        self.reset()
        user_id = user(20)
        self.seed(user_id, 3, prefix="ahit")
        n, reps = (500, 3) if self.quick else (3000, 7)
        return asyncio.run(async_api.hit(self.redis_server.url, self.clerk.url, user_id, n, reps))

    def async_stampede(self) -> dict[str, Any]:
        self.reset(CLERK_LATENCY_S)
        user_id = user(21)
        self.seed(user_id, 3, prefix="astampede")
        return asyncio.run(async_api.stampede(self.redis_server.url, self.clerk, user_id))

    def async_loop_lag(self) -> dict[str, Any]:
        self.reset(CLERK_LATENCY_S)
        n = 200 if self.quick else 1000
        users = [user(30_000 + i) for i in range(2 * n)]
        org = self.clerk.create_org("lag")["data"]["id"]
        for user_id in users:
            self.clerk.add_membership(user_id, org)
        return asyncio.run(
            async_api.loop_lag(self.redis_server.url, self.clerk.url, users, per_second=200.0, sync_cache=self.cache())
        )

    # -- 15. near ---------------------------------------------------------------------

    def near_hit(self) -> dict[str, Any]:
        self.reset()
        return near.near_hits(self.redis_server.url, self.clerk, self.quick)

    def near_intake(self) -> dict[str, Any]:
        self.reset()
        return near.intake_with_near(self.redis_server.url, self.clerk, self.quick)


def run(quick: bool) -> dict[str, Any]:
    (REPO / ".devstack").mkdir(exist_ok=True)
    bench = Bench(quick)
    r: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "redis_server": subprocess.run(
                [bench.redis_server.binary, "--version"], capture_output=True, text=True, check=False
            ).stdout.split()[2],
            "redis_py": redis_py.__version__,
            "hiredis": _has_hiredis(),
        },
        "quick": quick,
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("hit", bench.hit),
        ("miss", bench.miss),
        ("stampede", bench.stampede),
        ("intake", bench.intake),
        ("revocation", bench.revocation),
        ("fan_out", bench.fan_out),
        ("drain", bench.drain),
        ("drain_clerk_0ms", lambda: bench.drain(latency_s=0.0)),
        ("redis_down", bench.redis_down),
        ("hit_vs_orgs", lambda: {str(n): bench.hit(n) for n in (1, 10, 100, 500)}),
        ("drain_vs_concurrency", lambda: {str(c): bench.drain(concurrency=c) for c in (4, 8, 16, 32)}),
        ("drain_vs_workers", lambda: {str(w): bench.drain(workers=w) for w in (1, 2, 4)}),
        ("memory_per_user", lambda: memory_per_user(quick)),
        ("hits_vs_processes", lambda: hits_vs_processes(quick)),
        ("clerk_budget", lambda: budget_under_storms(quick)),
        ("async_hit", bench.async_hit),
        ("async_stampede", bench.async_stampede),
        ("async_loop_lag", bench.async_loop_lag),
        ("django_check", bench.django_check),
        ("role_updated", bench.role_updated),
        ("hit_permissions", bench.hit_permissions),
        ("near_hit", bench.near_hit),
        ("near_intake", bench.near_intake),
    ]
    try:
        for name, step in steps:
            started = time.perf_counter()
            r[name] = step()
            print(f"  {name:<22} done in {time.perf_counter() - started:5.1f} s", flush=True)
    finally:
        bench.close()
    return r


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401

        return True
    except ImportError:
        return False


def table(r: dict[str, Any]) -> str:
    rows = [
        ("hit p50", f"{r['hit']['ours_p50_us']:.0f} µs", f"{r['hit']['baseline_p50_us']:.0f} µs (GET+loads)",
         f"{r['hit']['ratio_p50']:.2f}x", "≤ 1.3x"),
        ("hit p99", f"{r['hit']['ours_p99_us']:.0f} µs", f"{r['hit']['baseline_p99_us']:.0f} µs",
         f"{r['hit']['ratio_p99']:.2f}x", ""),
        ("miss p50 (Clerk 60 ms)", f"{r['miss']['ours_p50_us'] / 1000:.1f} ms",
         f"{r['miss']['baseline_p50_us'] / 1000:.1f} ms (bare requests)",
         f"+{r['miss']['overhead_p50_ms']:.2f} ms", "≤ +2 ms"),
        ("50 cold lookups, 1 user", f"{r['stampede']['clerk_calls']} Clerk call(s)", "50 without single-flight",
         f"{r['stampede']['wait_fallbacks']} fallback(s)", "1 call"),
        ("intake", f"{r['intake']['events_per_s']:.0f} events/s", f"{r['intake']['healthz_per_s']:.0f} /healthz/s",
         f"{r['intake']['ratio'] * 100:.0f} %", "≥ 60 %"),
        ("revocation: staleness after 2xx", f"p99 {r['revocation']['staleness_p99_ms']:.1f} ms",
         f"{r['revocation']['stale_lookups_after_2xx']} stale of {r['revocation']['rounds']} first lookups",
         f"first lookup {r['revocation']['first_lookup_p50_ms']:.1f} ms (a miss)", "p99 ≤ 20 ms"),
        ("fan-out, 1,000 members", f"{r['fan_out']['seconds_until_all_fixed']:.2f} s", "Clerk 60 ms per call", "",
         "≤ 1 s"),
        ("drain, 1,000 users", f"{r['drain']['revoked_per_s']:.0f} revoked/s",
         f"{r['drain']['rewarmed_per_s']:.0f} re-warmed/s (Clerk 60 ms)",
         f"{r['drain_clerk_0ms']['rewarmed_per_s']:.0f} re-warmed/s (Clerk 0 ms)", "≥ 2,000/s"),
        ("lookup, Redis down", f"{r['redis_down']['ours_p50_us'] / 1000:.1f} ms",
         f"{r['redis_down']['baseline_p50_us'] / 1000:.1f} ms (bare Clerk call)",
         f"+{r['redis_down']['overhead_p50_ms']:.2f} ms", "a few ms"),
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    header = ("measure", "ours", "baseline (same run)", "ratio / extra", "goal")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    lines.append("hit p50 by orgs per user: " + ", ".join(
        f"{n}: {v['ours_p50_us']:.0f} µs ({v['ratio_p50']:.2f}x)" for n, v in r["hit_vs_orgs"].items()
    ))  # fmt: skip
    lines.append("re-warmed/s by REFRESH_CONCURRENCY: " + ", ".join(
        f"{c}: {v['rewarmed_per_s']:.0f}" for c, v in r["drain_vs_concurrency"].items()
    ))  # fmt: skip
    lines.append("re-warmed/s by worker processes: " + ", ".join(
        f"{w}: {v['rewarmed_per_s']:.0f}" for w, v in r["drain_vs_workers"].items()
    ))  # fmt: skip
    lines += sizing_lines(r)
    lines.append(budget_line(r))
    lines += async_lines(r)
    lines += django_authz.django_lines(r)
    lines += role_patch.role_lines(r)
    lines += near.near_lines(r)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="./dev bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, noisier)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args()
    print("running benchmarks (private redis-server and Clerk stand-in) ...", flush=True)
    results = run(args.quick)
    print()
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    try:
        from bench.plot import plot
    except ImportError:
        print("(matplotlib is not installed: no curves drawn)")
        return 0
    curves = args.json.with_name("curves.png")
    plot(results, curves)
    print(f"wrote {curves}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
