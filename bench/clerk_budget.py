"""The fleet's Clerk budget under a re-warm storm, for ``./dev bench``.

The Clerk stand-in enforces Clerk's production limit (1,000 requests / 10 s, 429 beyond). Cold
lookups of users nobody cached arrive at 10/s for 25 s (a user waits for each), first alone (the
baseline, same run, same Clerk), then while worker processes re-warm 1,500 cached users after a
burst of membership events. One row per Clerk latency (30 and 60 ms) and number of worker
processes (1 and 2, each with REFRESH_CONCURRENCY 8): a faster Clerk and more workers make
re-warming able to burst harder, which a budget that let it would pay for at the window's edge.
Reported per row: Clerk's 429s, the interactive p50/p99/maximum against the baseline's,
interactive errors, and the re-warm rate against the budget that interactive use leaves (the
default budget, 800 / 10 s, minus 10 lookups/s).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from redis import Redis
from rq import Worker

from bench.loadgen import fire, raw_request
from bench.stats import percentile
from cache import ClerkClient, MembershipCache
from cache.budget import BudgetPolicy, ClerkBudget, Priority
from cache.connections import cache_redis
from cache.contract import user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import signed_event
from devstack.stack import REPO, LocalStack
from devstack.waiting import wait_until
from tests.support import CLERK_KEY, SIGNING_SECRET, make_cache, stack_env

RATE_PER_S = 10
STORM_ROWS = [(0.030, 1), (0.030, 2), (0.060, 1), (0.060, 2)]  # (Clerk latency, worker processes)


def interactive_lookups(cache: MembershipCache, users: list[str], seconds: float) -> dict[str, Any]:
    """Cold lookups of ``users`` at RATE_PER_S, each started on schedule whatever the others do."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def lookup(user_id: str) -> None:
        started = time.perf_counter()
        try:
            cache.get_memberships(user_id)
        except Exception as exc:  # reported, not raised: the figure is how many failed
            with lock:
                errors.append(type(exc).__name__)
            return
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)

    count = int(seconds * RATE_PER_S)
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i in range(count):
            time.sleep(max(0.0, begin + i / RATE_PER_S - time.monotonic()))
            pool.submit(lookup, users[i])
    return {
        "lookups": count,
        "p50_ms": percentile(latencies, 50) if latencies else 0.0,
        "p99_ms": percentile(latencies, 99) if latencies else 0.0,
        "max_ms": max(latencies, default=0.0),
        "errors": len(errors),
    }


def budget_under_storms(quick: bool) -> dict[str, Any]:
    """Every row of STORM_ROWS (the quick run: the harder two, at 30 ms)."""
    rows = STORM_ROWS[:2] if quick else STORM_ROWS
    return {f"clerk_{int(latency * 1000)}ms_workers_{workers}": budget_under_burst(quick, latency, workers)
            for latency, workers in rows}  # fmt: skip


def budget_under_burst(quick: bool, latency_s: float = 0.060, workers: int = 1) -> dict[str, Any]:
    seconds = 8.0 if quick else 25.0
    burst = 400 if quick else 1500
    policy = BudgetPolicy()  # the defaults: 800 / 10 s, reserve 40
    with RedisServer() as redis_server, ClerkStandIn(secret_key=CLERK_KEY) as clerk:
        org = clerk.create_org("Budget")["data"]["id"]
        warm_users = [f"user_2bwarm{i:05d}" for i in range(burst)]
        filler = make_cache(redis_server.url, clerk.url)
        for user_id in warm_users:  # set-up, before Clerk's limit is switched on
            clerk.add_membership(user_id, org)
            filler.get_memberships(user_id)
        events = []
        for user_id in warm_users:
            body, headers = signed_event(SIGNING_SECRET, clerk.update_membership(user_id, org, "org:admin"))
            events.append(raw_request("POST", "/webhooks/clerk", headers, body.encode()))
        cold = [f"user_2bcold{i:05d}" for i in range(int(2 * seconds * RATE_PER_S))]
        clerk.latency_s = latency_s
        clerk.rate_limit.set("production")
        redis = cache_redis(redis_server.url)
        budget = ClerkBudget(redis, policy)
        cache = MembershipCache(redis, ClerkClient(CLERK_KEY, clerk.url, budget=budget, priority=Priority.INTERACTIVE))
        log = open(REPO / ".devstack" / "bench-stack.log", "ab")  # noqa: SIM115 - closed below
        with (
            log,
            LocalStack(stack_env(redis_server.url, clerk), log=log) as stack,
            more_workers(stack, workers - 1, log),
        ):
            baseline = interactive_lookups(cache, cold[: len(cold) // 2], seconds)
            keys = [user_orgs_key(u) for u in warm_users]
            progress: list[tuple[float, int]] = []  # (seconds since the burst, users re-warmed)

            def watch() -> None:
                check = Redis.from_url(redis_server.url)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    done = sum(1 for v in check.mget(keys) if v and b"org:admin" in v)
                    progress.append((time.monotonic() - started, done))
                    if done == burst:
                        break
                    time.sleep(0.25)
                check.close()

            started = time.monotonic()
            watcher = threading.Thread(target=watch)
            watcher.start()
            sent = fire(stack.port, events, max_seconds=60)
            during = interactive_lookups(cache, cold[len(cold) // 2 :], seconds)
            watcher.join()
            rewarm_s = progress[-1][0]
    left = policy.limit / policy.window_s - RATE_PER_S
    rewarmed_per_s = burst / rewarm_s
    # the steady state: the storm's second window, its first whole window under interactive load (the first
    # also has the seconds the events took to send, when no lookup ran and re-warming had more); a storm
    # too short for that (the quick run) is measured in its middle, once the window is full, before its tail
    window_s = policy.window_s
    if rewarm_s >= 2 * window_s:
        done = [max(n for t, n in progress if t <= at) for at in (window_s, 2 * window_s)]
        steady = (done[1] - done[0]) / window_s
    else:
        middle = [(t, n) for t, n in progress if burst * 0.25 <= n <= burst * 0.75]
        steady = (middle[-1][1] - middle[0][1]) / (middle[-1][0] - middle[0][0]) if len(middle) > 1 else 0.0
    return {
        "clerk_latency_ms": latency_s * 1000,
        "worker_processes": workers,
        "clerk_limit": "1,000 requests / 10 s (production)",
        "budget_per_window": policy.limit,
        "events": burst,
        "events_failed": sent["failed"],
        "baseline": baseline,
        "during_burst": during,
        "clerk_429s": clerk.rate_limit.refused,
        "rewarm_seconds": rewarm_s,
        "rewarmed_per_s": rewarmed_per_s,
        "budget_left_per_s": left,
        "rewarm_share_of_left": rewarmed_per_s / left,
        "rewarmed_per_s_steady": steady,
        "steady_share_of_left": steady / left,
        "p99_ratio": during["p99_ms"] / baseline["p99_ms"] if baseline["p99_ms"] else 0.0,
        "max_over_baseline_ms": during["max_ms"] - baseline["max_ms"],
    }


@contextlib.contextmanager
def more_workers(stack: LocalStack, count: int, log: IO[bytes]) -> Iterator[None]:
    """``count`` worker processes beside the stack's one, as a second Procfile worker dyno would run."""
    processes = [
        subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO, env=stack.env, stdout=log, stderr=log)
        for _ in range(count)
    ]
    try:
        redis = Redis.from_url(stack.env["REDIS_URL"])
        wait_until(lambda: Worker.count(connection=redis) >= 1 + count, 30)
        redis.close()
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def budget_line(r: dict[str, Any]) -> str:
    rows = r.get("clerk_budget")
    if not rows:
        return ""
    lines = ["Clerk budget under a re-warm storm (1,500 users, Clerk limit 1,000 / 10 s; interactive 10 lookups/s):"]
    for b in rows.values():
        d, base = b["during_burst"], b["baseline"]
        lines.append(
            f"  Clerk {b['clerk_latency_ms']:.0f} ms, {b['worker_processes']} worker(s): 429s {b['clerk_429s']}; "
            f"interactive p50/p99/max {d['p50_ms']:.0f}/{d['p99_ms']:.0f}/{d['max_ms']:.0f} ms vs "
            f"{base['p50_ms']:.0f}/{base['p99_ms']:.0f}/{base['max_ms']:.0f} ms without the storm "
            f"({b['p99_ratio']:.2f}x p99, max +{b['max_over_baseline_ms']:.0f} ms), errors {d['errors']}; "
            f"re-warmed {b['rewarmed_per_s_steady']:.0f}/s steady of {b['budget_left_per_s']:.0f}/s left "
            f"({b['steady_share_of_left'] * 100:.0f} %)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.clerk_budget", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    result = budget_under_storms(parser.parse_args().quick)
    print(json.dumps(result, indent=2))
    print(budget_line({"clerk_budget": result}))
