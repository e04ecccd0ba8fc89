"""The read-through cache against a real Redis and the Clerk stand-in, through the sync API and the
async one (each test runs once per API: the ``api`` fixture)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis

from cache import ClerkAuthError, ClerkUnavailable, InvalidId, Membership
from cache.contract import lease_key, user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from tests.read_apis import ReadApi
from tests.support import (
    ALICE,
    CLERK_KEY,
    cached_users,
    held_leases,
    stored,
    unreachable_redis_url,
)


def seed_user(clerk: ClerkStandIn, user_id: str, n_orgs: int, role: str = "org:member") -> list[str]:
    org_ids = []
    for i in range(n_orgs):
        org = clerk.create_org(f"Org {i}", slug=f"org-{i}-{user_id[-6:].lower()}")["data"]
        clerk.add_membership(user_id, org["id"], role)
        org_ids.append(org["id"])
    return org_ids


def test_miss_stores_the_contract_json_with_ttl(api: ReadApi, redis: Redis, clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Acme Inc", slug="acme", image_url="https://img.example/acme.png")["data"]
    clerk.add_membership(ALICE, org["id"], "org:admin")

    result = api.get_memberships(ALICE)

    admin = ("org:sys_profile:manage", "org:sys_profile:delete", "org:sys_memberships:read",
             "org:sys_memberships:manage", "org:sys_domains:read", "org:sys_domains:manage")  # fmt: skip
    assert result == [Membership(org["id"], "acme", "Acme Inc", "https://img.example/acme.png", "org:admin", admin)]
    raw = redis.get(f"user-orgs:{ALICE}")
    assert raw is not None
    assert json.loads(raw) == [
        {
            "organizationId": org["id"],
            "organizationSlug": "acme",
            "organizationName": "Acme Inc",
            "imageUrl": "https://img.example/acme.png",
            "role": "org:admin",
            "permissions": list(admin),
        }
    ]
    assert 290 <= redis.ttl(f"user-orgs:{ALICE}") <= 300


def test_hit_does_not_call_clerk(api: ReadApi, clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 2)
    first = api.get_memberships(ALICE)
    calls = clerk.call_count()
    assert api.get_memberships(ALICE) == first
    assert clerk.call_count() == calls


def test_value_written_by_another_service_is_served(api: ReadApi, redis: Redis, clerk: ClerkStandIn) -> None:
    """The contract is shared: a value a TypeScript service stored is read as is."""
    value = [{"organizationId": "org_2x", "organizationSlug": None, "organizationName": "X",
              "imageUrl": None, "role": "basic_member", "permissions": ["org:x:read"], "addedLater": 1}]  # fmt: skip
    redis.set(f"user-orgs:{ALICE}", json.dumps(value))
    assert api.get_memberships(ALICE) == [Membership("org_2x", None, "X", None, "basic_member", ("org:x:read",))]
    assert clerk.call_count() == 0


def test_user_without_orgs_is_cached_as_empty_array(api: ReadApi, redis: Redis) -> None:
    assert api.get_memberships(ALICE) == []
    assert redis.get(f"user-orgs:{ALICE}") == "[]"


@pytest.mark.parametrize("n_orgs", [11, 101, 260])
def test_pages_past_clerks_default_limit(api: ReadApi, redis: Redis, clerk: ClerkStandIn, n_orgs: int) -> None:
    org_ids = seed_user(clerk, ALICE, n_orgs)
    result = api.get_memberships(ALICE)
    assert sorted(m.organization_id for m in result) == sorted(org_ids)
    assert len(stored(redis, ALICE)) == n_orgs


def test_roles_are_opaque(api: ReadApi, clerk: ClerkStandIn) -> None:
    roles = ["org:admin", "org:member", "org:billing", "admin", "basic_member"]
    for i, role in enumerate(roles):
        org = clerk.create_org(f"R{i}")["data"]
        clerk.add_membership(ALICE, org["id"], role)
    assert sorted(m.role for m in api.get_memberships(ALICE)) == sorted(roles)


def test_get_user_org_membership(api: ReadApi, clerk: ClerkStandIn) -> None:
    acme, globex = (clerk.create_org(name)["data"]["id"] for name in ("Acme", "Globex"))
    clerk.add_membership(ALICE, acme, "org:admin")
    assert api.module_get_membership(ALICE, acme) is not None
    assert api.module_get_membership(ALICE, acme).role == "org:admin"  # type: ignore[union-attr]
    assert api.module_get_membership(ALICE, globex) is None


def test_module_functions_and_invalidate(api: ReadApi, redis: Redis, clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, org)
    assert [m.organization_id for m in api.module_get_memberships(ALICE)] == [org]
    clerk.remove_membership(ALICE, org)
    api.module_invalidate(ALICE)
    assert redis.exists(user_orgs_key(ALICE)) == 0
    assert api.module_get_memberships(ALICE) == []


def test_rate_limited_then_success(api: ReadApi, clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 1)
    clerk.fail_next(2, status=429, retry_after=0)
    assert len(api.get_memberships(ALICE)) == 1


def assert_nothing_stored_and_the_lease_given_back(redis: Redis, user_id: str) -> None:
    assert redis.get(user_orgs_key(user_id)) is None
    assert redis.exists(lease_key(user_id)) == 0
    assert cached_users(redis) == [] and held_leases(redis) == []


def test_persistent_outage_raises_typed_error_and_stores_nothing(
    open_api: Callable[..., ReadApi], redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Bounded retries: exactly ``max_attempts`` calls to Clerk, then the typed error."""
    seed_user(clerk, ALICE, 1)
    attempts = 3
    c = open_api(redis_server.url, clerk.url, max_attempts=attempts)
    clerk.fail_next(10, status=503)
    with pytest.raises(ClerkUnavailable, match="503"):
        c.get_memberships(ALICE)
    assert clerk.call_count() == attempts  # retried to the bound, and not once more
    assert_nothing_stored_and_the_lease_given_back(redis, ALICE)


def test_garbage_json_is_never_cached(
    open_api: Callable[..., ReadApi], redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    attempts = 3
    c = open_api(redis_server.url, clerk.url, max_attempts=attempts)
    clerk.fail_next(10, status=200, body="not json{")
    with pytest.raises(ClerkUnavailable, match="not JSON"):
        c.get_memberships(ALICE)
    assert clerk.call_count() == attempts  # retried to the bound, and not once more
    assert_nothing_stored_and_the_lease_given_back(redis, ALICE)


def _without(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    """A deep copy of ``obj`` with the key at ``path`` removed."""
    copy = json.loads(json.dumps(obj))
    inner = copy
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return copy


MALFORMED: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    # valid JSON from Clerk, with a well-formed membership next to a bad one, or of the wrong shape
    "membership without organization": lambda good: {"data": [good, _without(good, "organization")], "total_count": 2},
    "organization without id": lambda good: {"data": [good, _without(good, "organization", "id")], "total_count": 2},
    "membership without role": lambda good: {"data": [good, _without(good, "role")], "total_count": 2},
    "membership not an object": lambda good: {"data": [good, "orgmem_x"], "total_count": 2},
    "data not a list": lambda good: {"data": good, "total_count": 1},
}


@pytest.mark.parametrize("shape", MALFORMED)
def test_a_malformed_membership_is_never_cached(api: ReadApi, redis: Redis, clerk: ClerkStandIn, shape: str) -> None:
    """Clerk answers 200 with valid JSON of the wrong shape: the typed error, nothing stored (not
    even the well-formed membership beside the bad one), the lease given back."""
    seed_user(clerk, ALICE, 1)
    (good,) = clerk.memberships_of(ALICE)  # a membership object exactly as the stand-in (Clerk) serves it
    clerk.fail_next(10, status=200, body=json.dumps(MALFORMED[shape](good)))
    with pytest.raises(ClerkUnavailable, match=r"^Clerk answered a (malformed membership|list without data|list elem)"):
        api.get_memberships(ALICE)
    assert_nothing_stored_and_the_lease_given_back(redis, ALICE)
    # the control: the same body with the well-formed membership alone is served and stored
    clerk.clear_failures()
    clerk.fail_next(1, status=200, body=json.dumps({"data": [good], "total_count": 1}))
    assert [m.organization_id for m in api.get_memberships(ALICE)] == [good["organization"]["id"]]
    assert cached_users(redis) == [ALICE]


def test_wrong_clerk_key_is_a_configuration_error(
    open_api: Callable[..., ReadApi], redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn
) -> None:
    wrong = open_api(redis_server.url, clerk.url, clerk_key="sk_test_wrong")
    with pytest.raises(ClerkAuthError, match="CLERK_SECRET_KEY") as info:
        wrong.get_memberships(ALICE)
    assert "sk_test_wrong" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "alice", "user_*", "user_a:b", "user_a\nb", "user_" + "a" * 10_000, "org_abc"])
def test_invalid_user_ids_are_refused_before_any_io(api: ReadApi, clerk: ClerkStandIn, bad: str) -> None:
    with pytest.raises(InvalidId):
        api.get_memberships(bad)
    assert clerk.call_count() == 0


def test_redis_down_answers_from_clerk_quickly(
    open_api: Callable[..., ReadApi], own_redis: RedisServer, clerk: ClerkStandIn
) -> None:
    """Redis refusing connections (nothing listens), then hung (a real redis-server stopped with
    SIGSTOP: the kernel still accepts connections, nothing answers): every lookup answers from Clerk.

    How fast such a lookup is belongs to the benchmark ("lookup with Redis down" in the README).
    The bound here is the breaker's: a hung Redis costs each lookup that tries it the lookup
    client's read timeout (0.5 s), so 20 lookups that all tried it would take at least 10 s,
    however fast the machine. With the breaker, one lookup pays and the others skip Redis (one
    probe per 1 s cooldown): about 0.6 s here. The bound is half of the 10 s."""
    seed_user(clerk, ALICE, 3)
    clerk.latency_s = 0.0
    dead = open_api(unreachable_redis_url(), clerk.url)
    for _ in range(20):
        assert len(dead.get_memberships(ALICE)) == 3
    assert dead.breaker.is_open
    assert dead.stats.snapshot()["redis_fallbacks"] == 20

    hung = open_api(own_redis.url, clerk.url)
    read_timeout_s = hung.cache.redis.connection_pool.connection_kwargs["socket_timeout"]
    assert own_redis.pid is not None
    os.kill(own_redis.pid, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        for _ in range(20):
            assert len(hung.get_memberships(ALICE)) == 3
        elapsed = time.perf_counter() - started
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    assert hung.breaker.is_open
    assert hung.stats.snapshot()["redis_fallbacks"] == 20
    assert elapsed < 20 * read_timeout_s / 2, elapsed


def test_lookups_resume_using_redis_when_it_returns(
    open_api: Callable[..., ReadApi], own_redis: RedisServer, clerk: ClerkStandIn
) -> None:
    seed_user(clerk, ALICE, 1)
    own_redis.stop()
    c = open_api(own_redis.url, clerk.url)
    assert len(c.get_memberships(ALICE)) == 1  # server not started yet: from Clerk
    assert c.breaker.is_open
    own_redis.start()
    deadline = time.monotonic() + 5
    while c.breaker.is_open and time.monotonic() < deadline:
        c.get_memberships(ALICE)
        time.sleep(0.05)
    assert not c.breaker.is_open
    assert Redis.from_url(own_redis.url).exists(user_orgs_key(ALICE)) == 1


def test_concurrent_cold_lookups_call_clerk_once(api: ReadApi, clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 2)
    clerk.latency_s = 0.1
    clerk.reset_counts()
    results = [len(answer) for answer in api.concurrent_lookups(ALICE, 50)]
    stats = api.stats.snapshot()
    assert results == [2] * 50
    assert clerk.call_count() == 1 + stats["wait_fallbacks"]
    assert stats["wait_fallbacks"] == 0


def test_clerk_key_never_appears_in_errors(api: ReadApi, clerk: ClerkStandIn) -> None:
    clerk.fail_next(10, status=500)
    with pytest.raises(ClerkUnavailable) as info:
        api.get_memberships(ALICE)
    assert CLERK_KEY not in str(info.value) and CLERK_KEY not in repr(api.cache.clerk)


def test_an_unusable_clerk_url_is_clerk_unavailable_in_both_apis(
    open_api: Callable[..., ReadApi], redis_server: RedisServer, redis: Redis
) -> None:
    """Found in review: the async client let a raw ExceptionGroup(OverflowError) out for a port past 65535."""
    broken = open_api(redis_server.url, "http://127.0.0.1:99999", max_attempts=1)
    with pytest.raises(ClerkUnavailable, match="Clerk unreachable"):
        broken.get_memberships(ALICE)
    assert cached_users(redis) == [] and held_leases(redis) == []
