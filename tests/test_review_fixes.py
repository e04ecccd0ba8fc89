"""Regression tests for what an independent review of the protocol found (each reproduced, then fixed)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from redis import Redis
from redis.exceptions import ResponseError

from cache import MembershipCache
from cache.contract import CHANGE_SEQ_KEY, lease_key, stash_key, user_orgs_key
from cache.protocol import PatchAction, PatchOutcome, new_token
from cache.scripts import script_source
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from tests.support import (
    ALICE,
    cached_member,
    held_leases,
    orgs_awaiting_patch,
    post_event,
    run_module,
    service_env,
    stored,
)
from worker.store import RefreshStore


def test_org_patches_never_push_a_values_expiry_back(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    """Found: each patch re-set the value's remaining TTL *after* a slow org read, adding its duration.

    Reproduced: 11 renames patched with a 2 s org read kept a 10 s value alive past 22 s. Now a
    patched value keeps its stash's absolute expiry, so it is gone USER_ORGS_TTL_SECONDS after the
    lease under which Clerk's memberships were read."""
    short = MembershipCache(cache.redis, cache.clerk, ttl_seconds=5)  # outlives 3 slow patches on a busy machine
    acme = cached_member(clerk, short, ALICE)
    expires_at = redis.pexpiretime(user_orgs_key(ALICE))
    assert expires_at > 0
    clerk.latency_s = 0.4  # each patch's org read is slow
    for n in range(3):
        assert post_event(client, clerk.update_org(acme, name=f"Acme {n}")).status_code == 200
        run_worker()
        assert f"Acme {n}" in (redis.get(user_orgs_key(ALICE)) or "")
        assert redis.pexpiretime(user_orgs_key(ALICE)) == expires_at  # exactly the first fill's expiry
    clerk.remove_membership(ALICE, acme)  # in Clerk only: its webhook has not arrived
    time.sleep(max(0.0, expires_at / 1000 - time.time()) + 0.05)
    assert short.get_memberships(ALICE) == []  # the value is gone on time: Clerk answers


@pytest.mark.parametrize("script", ["acquire", "acquire_patch"])
def test_the_lease_cap_is_enforced_by_the_script_itself(redis: Redis, script: str) -> None:
    """Found: only Python checked MAX_LEASE_MS; a 600 s lease was granted to a direct caller, longer
    than the 120 s an org change is remembered, so a slow first fill could pass the org-change check."""
    keys = [user_orgs_key(ALICE), lease_key(ALICE), CHANGE_SEQ_KEY]
    args: list[str | int] = [new_token(), 600_000]
    if script == "acquire":
        args.append("0")
    else:
        keys.append(stash_key(ALICE))
    with pytest.raises(ResponseError, match="lease lifetime must be 1 to 60000 ms"):
        redis.eval(script_source(script), len(keys), *keys, *args)
    assert held_leases(redis) == []
    redis.eval(script_source(script), len(keys), *keys, *args[:1], 60_000, *args[2:])
    assert held_leases(redis) == [ALICE]


def test_warm_with_a_user_named_twice_works_and_leaves_no_lease(
    redis_server: RedisServer, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Found: `warm user_x user_x` crashed after taking the leases, voiding fills in flight for 15 s."""
    cached_member(clerk, cache, ALICE)
    redis.delete(user_orgs_key(ALICE))
    env = {**os.environ, **service_env(redis_server.url, clerk.url)}
    result = run_module("service.cli", "warm", ALICE, ALICE, env=env)
    assert result.returncode == 0, result.stderr
    assert stored(redis, ALICE) is not None and held_leases(redis) == []
    clerk.fail_next(100, status=503)
    redis.delete(user_orgs_key(ALICE))
    failed = run_module("service.cli", "warm", ALICE, ALICE, env=env)
    assert failed.returncode == 1
    assert held_leases(redis) == []  # given back on the error path too


def test_a_second_org_event_during_a_patch_is_not_lost(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    """Found: the patch took its leases, then read the stashes; a second org event re-stashing the value
    in between was settled as if patched, and the user was dropped. Now lease and stash are read in one
    step, so the patch settles against the stash it read and the newer one waits for the next pass."""
    acme = cached_member(clerk, cache, ALICE)
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    assert cache.get_memberships(ALICE)  # a lookup refills the value; the first stash is still there
    store = RefreshStore(cache.redis)
    [(_, first_stash)] = store.acquire_patch_many([(ALICE, new_token())], 15_000)
    assert first_stash is not None  # read in the same step as the (HIT) acquire
    assert post_event(client, clerk.update_org(acme, name="Acme 3")).status_code == 200  # re-stashes the value
    store.finish_patch(acme, [PatchOutcome(ALICE, first_stash, PatchAction.DONE)])
    assert redis.exists(stash_key(ALICE)) == 1 and f"o:{acme}" in orgs_awaiting_patch(redis)  # the newer waits
    clerk.reset_counts()
    run_worker()
    assert [m["organizationName"] for m in stored(redis, ALICE)] == ["Acme 3"]
    assert clerk.call_count("/v1/users/") == 0  # patched from one org read, not re-read in full
