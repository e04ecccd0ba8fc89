"""The read-through cache against a real Redis and the Clerk stand-in."""

from __future__ import annotations

import json
import threading
import time

import pytest
from redis import Redis

import cache as cache_module
from cache import ClerkAuthError, ClerkUnavailable, InvalidId, Membership, MembershipCache
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer, free_port
from tests.conftest import CLERK_KEY, make_cache

ALICE = "user_2alice000000000000000000000"


def seed_user(clerk: ClerkStandIn, user_id: str, n_orgs: int, role: str = "org:member") -> list[str]:
    org_ids = []
    for i in range(n_orgs):
        org = clerk.create_org(f"Org {i}", slug=f"org-{i}-{user_id[-6:].lower()}")["data"]
        clerk.add_membership(user_id, org["id"], role)
        org_ids.append(org["id"])
    return org_ids


def test_miss_stores_the_contract_json_with_ttl(cache: MembershipCache, redis: Redis, clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Acme Inc", slug="acme", image_url="https://img.example/acme.png")["data"]
    clerk.add_membership(ALICE, org["id"], "org:admin")

    result = cache.get_memberships(ALICE)

    assert result == [Membership(org["id"], "acme", "Acme Inc", "https://img.example/acme.png", "org:admin")]
    stored = redis.get(f"user-orgs:{ALICE}")
    assert stored is not None
    assert json.loads(stored) == [
        {
            "organizationId": org["id"],
            "organizationSlug": "acme",
            "organizationName": "Acme Inc",
            "imageUrl": "https://img.example/acme.png",
            "role": "org:admin",
        }
    ]
    assert 290 <= redis.ttl(f"user-orgs:{ALICE}") <= 300


def test_hit_does_not_call_clerk(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 2)
    first = cache.get_memberships(ALICE)
    calls = clerk.call_count()
    assert cache.get_memberships(ALICE) == first
    assert clerk.call_count() == calls


def test_value_written_by_another_service_is_served(cache: MembershipCache, redis: Redis, clerk: ClerkStandIn) -> None:
    """The contract is shared: a value a TypeScript service stored is read as is."""
    value = [{"organizationId": "org_2x", "organizationSlug": None, "organizationName": "X",
              "imageUrl": None, "role": "basic_member"}]  # fmt: skip
    redis.set(f"user-orgs:{ALICE}", json.dumps(value))
    assert cache.get_memberships(ALICE) == [Membership("org_2x", None, "X", None, "basic_member")]
    assert clerk.call_count() == 0


def test_user_without_orgs_is_cached_as_empty_array(cache: MembershipCache, redis: Redis) -> None:
    assert cache.get_memberships(ALICE) == []
    assert redis.get(f"user-orgs:{ALICE}") == "[]"


@pytest.mark.parametrize("n_orgs", [11, 101, 260])
def test_pages_past_clerks_default_limit(
    cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, n_orgs: int
) -> None:
    org_ids = seed_user(clerk, ALICE, n_orgs)
    result = cache.get_memberships(ALICE)
    assert sorted(m.organization_id for m in result) == sorted(org_ids)
    assert len(json.loads(redis.get(f"user-orgs:{ALICE}") or "")) == n_orgs


def test_roles_are_opaque(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    roles = ["org:admin", "org:member", "org:billing", "admin", "basic_member"]
    for i, role in enumerate(roles):
        org = clerk.create_org(f"R{i}")["data"]
        clerk.add_membership(ALICE, org["id"], role)
    assert sorted(m.role for m in cache.get_memberships(ALICE)) == sorted(roles)


def test_get_user_org_membership(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    acme, globex = (clerk.create_org(name)["data"]["id"] for name in ("Acme", "Globex"))
    clerk.add_membership(ALICE, acme, "org:admin")
    assert cache_module.get_user_org_membership(ALICE, acme) is not None
    assert cache_module.get_user_org_membership(ALICE, acme).role == "org:admin"  # type: ignore[union-attr]
    assert cache_module.get_user_org_membership(ALICE, globex) is None


def test_module_functions_and_invalidate(cache: MembershipCache, redis: Redis, clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, org)
    assert [m.organization_id for m in cache_module.get_cached_user_org_memberships(ALICE)] == [org]
    clerk.remove_membership(ALICE, org)
    cache_module.invalidate_user_org_memberships(ALICE)
    assert redis.exists(f"user-orgs:{ALICE}") == 0
    assert cache_module.get_cached_user_org_memberships(ALICE) == []


def test_rate_limited_then_success(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 1)
    clerk.fail_next(2, status=429, retry_after=0)
    assert len(cache.get_memberships(ALICE)) == 1


def test_persistent_outage_raises_typed_error_and_stores_nothing(
    cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    seed_user(clerk, ALICE, 1)
    clerk.fail_next(10, status=503)
    with pytest.raises(ClerkUnavailable):
        cache.get_memberships(ALICE)
    assert redis.keys("user-orgs:*") == []
    assert redis.keys("user-orgs-lease:*") == []  # the lease was given back


def test_garbage_json_is_never_cached(cache: MembershipCache, redis: Redis, clerk: ClerkStandIn) -> None:
    clerk.fail_next(10, status=200, body="not json{")
    with pytest.raises(ClerkUnavailable):
        cache.get_memberships(ALICE)
    assert redis.keys("user-orgs:*") == []


def test_wrong_clerk_key_is_a_configuration_error(redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn) -> None:
    from cache import ClerkClient
    from cache.connections import cache_redis

    wrong = MembershipCache(cache_redis(redis_server.url), ClerkClient("sk_test_wrong", clerk.url))
    with pytest.raises(ClerkAuthError, match="CLERK_SECRET_KEY") as info:
        wrong.get_memberships(ALICE)
    assert "sk_test_wrong" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "alice", "user_*", "user_a:b", "user_a\nb", "user_" + "a" * 10_000, "org_abc"])
def test_invalid_user_ids_are_refused_before_any_io(cache: MembershipCache, clerk: ClerkStandIn, bad: str) -> None:
    with pytest.raises(InvalidId):
        cache.get_memberships(bad)
    assert clerk.call_count() == 0


def test_redis_down_answers_from_clerk_quickly(clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 3)
    dead = make_cache(f"redis://127.0.0.1:{free_port()}/0", clerk)
    clerk.latency_s = 0.0
    started = time.perf_counter()
    for _ in range(20):
        assert len(dead.get_memberships(ALICE)) == 3
    per_lookup = (time.perf_counter() - started) / 20
    assert per_lookup < 0.5, per_lookup  # a generous bound: "well under a second" per lookup
    assert dead.breaker.is_open
    assert dead.stats.snapshot()["redis_fallbacks"] == 20


def test_lookups_resume_using_redis_when_it_returns(clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 1)
    server = RedisServer()
    try:
        c = make_cache(server.url, clerk)
        assert len(c.get_memberships(ALICE)) == 1  # server not started yet: from Clerk
        assert c.breaker.is_open
        server.start()
        deadline = time.monotonic() + 5
        while c.breaker.is_open and time.monotonic() < deadline:
            c.get_memberships(ALICE)
            time.sleep(0.05)
        assert not c.breaker.is_open
        assert Redis.from_url(server.url).exists(f"user-orgs:{ALICE}") == 1
    finally:
        server.close()


def test_concurrent_cold_lookups_call_clerk_once(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    seed_user(clerk, ALICE, 2)
    clerk.latency_s = 0.1
    clerk.reset_counts()
    barrier = threading.Barrier(50)
    results: list[int] = []

    def lookup() -> None:
        barrier.wait()
        results.append(len(cache.get_memberships(ALICE)))

    threads = [threading.Thread(target=lookup) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats.snapshot()
    assert results == [2] * 50
    assert clerk.call_count() == 1 + stats["wait_fallbacks"]
    assert stats["wait_fallbacks"] == 0


def test_clerk_key_never_appears_in_errors(cache: MembershipCache, clerk: ClerkStandIn) -> None:
    clerk.fail_next(10, status=500)
    with pytest.raises(ClerkUnavailable) as info:
        cache.get_memberships(ALICE)
    assert CLERK_KEY not in str(info.value) and CLERK_KEY not in repr(cache.clerk)
