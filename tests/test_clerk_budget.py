"""One Clerk budget in Redis for the whole fleet: shared by processes, interactive first, paused by a 429.

Windows are shortened (CLERK_RATE_WINDOW_SECONDS) so the tests run in real time; the Clerk stand-in
enforces Clerk's own rule (fixed windows, 429 with Retry-After) at the same scale.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from redis import Redis

from cache import ClerkClient, ClerkRateLimited
from cache.budget import BudgetPolicy, ClerkBudget, Priority
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.stack import REPO
from devstack.waiting import wait_until
from tests.support import CLERK_KEY

LIMIT, WINDOW_S = 30, 1.0

CALLER = """
import sys, time
from redis import Redis
from cache import ClerkClient
from cache.budget import BudgetPolicy, ClerkBudget, Priority
redis_url, clerk_url, key, seconds = sys.argv[1:5]
budget = ClerkBudget(Redis.from_url(redis_url), BudgetPolicy(limit=30, window_s=1.0, reserve=3))
clerk = ClerkClient(key, clerk_url, budget=budget, priority=Priority.REWARM)
calls, end = 0, time.monotonic() + float(seconds)
while time.monotonic() < end:
    clerk.list_user_memberships("user_2budget")
    calls += 1
print(calls)
"""


def policy(**overrides: float) -> BudgetPolicy:
    return BudgetPolicy(**{"limit": LIMIT, "window_s": WINDOW_S, "reserve": 3, **overrides})  # type: ignore[arg-type]


def test_two_processes_share_one_budget_and_clerk_never_sees_it_exceeded(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    clerk.rate_limit.set(LIMIT, window_s=WINDOW_S)  # Clerk's rule at this scale: fixed windows, 429 beyond
    args = [redis_server.url, clerk.url, CLERK_KEY, "3.5"]
    processes = [
        subprocess.Popen([sys.executable, "-c", CALLER, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    calls = [int(p.communicate(timeout=60)[0]) for p in processes]
    assert all(n > 0 for n in calls), calls  # both drew from the budget
    assert clerk.rate_limit.refused == 0  # the fleet never went over Clerk's limit...
    assert clerk.rate_limit.busiest <= LIMIT
    assert sum(calls) >= 2 * (LIMIT - 3)  # ...and used it (re-warming leaves the reserve): ~3 windows' worth


ONE_CALL = """
import sys, time
from redis import Redis
from cache import ClerkClient
from cache.budget import BudgetPolicy, ClerkBudget
redis_url, clerk_url, key = sys.argv[1:4]
budget = ClerkBudget(Redis.from_url(redis_url), BudgetPolicy(limit=30, window_s=1.0, reserve=3, interactive_wait_s=8))
client = ClerkClient(key, clerk_url, budget=budget)
print(time.time(), flush=True)  # when it asked for its slot
client.list_user_memberships("user_2second")
"""


def test_a_429_seen_by_one_process_pauses_the_others(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    budget = ClerkBudget(Redis.from_url(redis_server.url), policy(interactive_wait_s=8))
    first = ClerkClient(CLERK_KEY, clerk.url, budget=budget)
    clerk.fail_next(1, status=429, retry_after=3)
    first_done = threading.Event()
    threading.Thread(target=lambda: (first.list_user_memberships("user_2first"), first_done.set())).start()
    wait_until(lambda: redis.get("clerk-org-cache:clerk-paused-until") is not None, 5)  # its 429 paused the fleet
    paused_until = int(redis.get("clerk-org-cache:clerk-paused-until") or 0) / 1000  # Unix s, by Redis's clock
    other = subprocess.Popen(
        [sys.executable, "-c", ONE_CALL, redis_server.url, clerk.url, CLERK_KEY],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    asked_at = float(other.communicate(timeout=20)[0])
    assert other.returncode == 0 and first_done.wait(5)  # both are served in the end
    assert asked_at < paused_until  # the other process asked during the pause...
    (second_call,) = clerk.arrivals("/v1/users/user_2second/")
    assert second_call >= paused_until - 0.005  # ...and Clerk heard from it only once the pause was over
    first_calls = clerk.arrivals("/v1/users/user_2first/")
    assert len(first_calls) == 2 and first_calls[1] >= paused_until - 0.005  # as from the process that got the 429


@contextlib.contextmanager
def rewarming(budget: ClerkBudget, threads: int) -> Iterator[list[float]]:
    """``threads`` re-warm callers taking slots as fast as the budget gives them (a fast Clerk, many
    workers); yields the times of their grants, which keeps growing until the block ends."""
    stop = threading.Event()
    grants: list[float] = []

    def take_forever() -> None:
        while not stop.is_set():
            budget.take(Priority.REWARM)
            grants.append(time.monotonic())

    callers = [threading.Thread(target=take_forever) for _ in range(threads)]
    for caller in callers:
        caller.start()
    try:
        yield grants
    finally:
        stop.set()
        for caller in callers:
            caller.join(10)


def most_in_one_window(grants: list[float], window_s: float) -> int:
    return max(sum(1 for t in grants if start <= t < start + window_s) for start in grants)


def test_interactive_lookups_are_served_while_rewarming_saturates_the_budget(
    redis_server: RedisServer, redis: Redis
) -> None:
    rewarm = ClerkBudget(Redis.from_url(redis_server.url), policy())
    interactive = ClerkBudget(Redis.from_url(redis_server.url), policy(interactive_wait_s=1.0))
    with rewarming(rewarm, threads=4) as rewarm_grants:
        time.sleep(1.2)  # re-warming has taken all it may
        for _ in range(12):
            interactive.take(Priority.INTERACTIVE)  # raises ClerkRateLimited if it had to wait past 1 s
            time.sleep(0.1)
    assert most_in_one_window(rewarm_grants, WINDOW_S) <= LIMIT - 3  # re-warming never took the reserve...
    assert most_in_one_window(rewarm_grants, WINDOW_S) >= 0.85 * (LIMIT - 3)  # ...and had the rest when unused


def test_a_lookup_arriving_once_rewarming_has_used_the_window_gets_a_slot_within_the_interactive_wait(
    redis_server: RedisServer,
) -> None:
    """The window's edge: re-warming as fast as it may (a fast Clerk, many workers), then more interactive
    calls at once than the reserve holds. Each must be granted within its wait, which is a fifth of the
    window: a budget that let re-warming spend its share at the window's start would make them wait
    until that burst aged out, most of a window."""
    window_s, limit, reserve = 2.5, 40, 2
    rewarm = ClerkBudget(
        Redis.from_url(redis_server.url), BudgetPolicy(limit=limit, window_s=window_s, reserve=reserve)
    )
    interactive = ClerkBudget(
        Redis.from_url(redis_server.url),
        BudgetPolicy(limit=limit, window_s=window_s, reserve=reserve, interactive_wait_s=window_s / 5),
    )
    refused, waits = 0, []
    with rewarming(rewarm, threads=8) as rewarm_grants:
        time.sleep(1.5 * window_s)  # re-warming has had all a window allows, and keeps asking
        for _ in range(3):  # three bursts, each of three times the reserve
            burst_start = time.monotonic()
            for _ in range(3 * reserve):
                started = time.monotonic()
                try:
                    interactive.take(Priority.INTERACTIVE)
                except ClerkRateLimited:
                    refused += 1
                waits.append(time.monotonic() - started)
            time.sleep(max(0.0, burst_start + window_s / 3 - time.monotonic()))
    assert refused == 0, f"{refused} of {len(waits)} interactive calls found no slot; waits {sorted(waits)[-3:]}"
    assert most_in_one_window(rewarm_grants, window_s) <= limit - reserve  # re-warming never took the reserve
    assert len(rewarm_grants) >= 0.85 * (limit - reserve) * 2  # and it used what was left: two windows' worth


def test_an_interactive_caller_that_cannot_wait_gets_a_typed_error(redis_server: RedisServer) -> None:
    budget = ClerkBudget(Redis.from_url(redis_server.url), policy(interactive_wait_s=0.2))
    budget.pause(5)  # as after a 429 with Retry-After: 5
    with pytest.raises(ClerkRateLimited):
        budget.take(Priority.INTERACTIVE)


@pytest.mark.parametrize(("instance", "limit"), [("development", 100), ("production", 1000)])
def test_the_stand_in_enforces_clerks_documented_limits(clerk: ClerkStandIn, instance: str, limit: int) -> None:
    clerk.rate_limit.set(instance)
    session = requests.Session()
    url = f"{clerk.url}/v1/users/user_2limit/organization_memberships"
    headers = {"Authorization": f"Bearer {CLERK_KEY}"}
    while time.time() % 10 > 7:  # start early in a 10 s window, so that all fit in one
        time.sleep(0.1)
    statuses = [session.get(url, headers=headers, timeout=5).status_code for _ in range(limit + 1)]
    assert statuses[:limit] == [200] * limit
    refused = session.get(url, headers=headers, timeout=5)
    assert statuses[-1] == 429 and refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 10


def test_a_lookup_that_cannot_wait_for_budget_fails_closed_and_stores_nothing(
    redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    from cache import MembershipCache
    from cache.connections import cache_redis
    from tests.support import ALICE, held_leases, stored

    client = cache_redis(redis_server.url)
    budget = ClerkBudget(client, policy(interactive_wait_s=0.2))
    cache = MembershipCache(client, ClerkClient(CLERK_KEY, clerk.url, budget=budget))
    budget.pause(5)  # another process just got a 429 with Retry-After: 5
    with pytest.raises(ClerkRateLimited):
        cache.get_memberships(ALICE)
    assert clerk.call_count() == 0  # Clerk was not called during the pause
    assert stored(redis, ALICE) is None and held_leases(redis) == []  # no guess stored, the lease given back


def test_without_redis_the_budget_steps_aside_and_lookups_answer_from_clerk(clerk: ClerkStandIn) -> None:
    from cache import MembershipCache
    from cache.connections import cache_redis
    from tests.support import ALICE, orgs_with_member, unreachable_redis_url

    orgs_with_member(clerk, ALICE, "Acme")
    client = cache_redis(unreachable_redis_url())
    cache = MembershipCache(client, ClerkClient(CLERK_KEY, clerk.url, budget=ClerkBudget(client, policy())))
    for _ in range(5):
        assert [m.organization_name for m in cache.get_memberships(ALICE)] == ["Acme"]
    assert clerk.call_count() == 5 and cache.stats.snapshot()["redis_fallbacks"] == 5
