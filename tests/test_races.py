"""Forced interleavings: the Clerk stand-in holds a read until the test releases it. The lookup-side
races run against the sync and the async API (the ``api`` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from cache import MembershipCache
from cache.contract import decode_memberships, stash_key, user_orgs_key
from cache.protocol import PatchAction, PatchOutcome, new_token
from devstack.clerk_standin import ClerkStandIn
from tests.read_apis import ReadApi
from tests.support import ALICE, cached_member, lease_held, orgs_awaiting_patch, post_event, stored, wait_until_drained
from worker.store import RefreshStore


def held_lookup(
    cache: MembershipCache | ReadApi, clerk: ClerkStandIn, user_id: str, during: Callable[[], None]
) -> list[Any]:
    """Start a lookup, freeze its Clerk read after Clerk answered, run ``during``, then let it finish."""
    results: list[Any] = []
    with clerk.hold(user_id) as gate:
        reader = threading.Thread(target=lambda: results.append(cache.get_memberships(user_id)))
        reader.start()
        assert gate.wait_arrived()
        during()
    reader.join(10)
    assert not reader.is_alive()
    return results[0]  # type: ignore[no-any-return]


def cached(redis: Redis, user_id: str) -> list[tuple[str, str, str]] | None:
    raw = redis.get(user_orgs_key(user_id))
    if raw is None:
        return None
    return sorted((m.organization_id, m.organization_name, m.role) for m in decode_memberships(raw))


def truth(clerk: ClerkStandIn, user_id: str) -> list[tuple[str, str, str]]:
    return sorted(
        (m["organization"]["id"], m["organization"]["name"], m["role"]) for m in clerk.memberships_of(user_id)
    )


def test_fill_racing_a_rename_is_refused(client: FlaskClient, api: ReadApi, redis: Redis, clerk: ClerkStandIn) -> None:
    acme = cached_member(clerk, api, ALICE)
    api.invalidate(ALICE)

    def rename() -> None:
        assert post_event(client, clerk.update_org(acme, name="Acme Renamed")).status_code == 200

    old = held_lookup(api, clerk, ALICE, rename)
    assert [m.organization_name for m in old] == ["Acme"]
    assert cached(redis, ALICE) is None
    assert [m.organization_name for m in api.get_memberships(ALICE)] == ["Acme Renamed"]


def test_role_downgrade_racing_a_fill_is_refused(
    client: FlaskClient, api: ReadApi, redis: Redis, clerk: ClerkStandIn
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme, "org:admin")

    def downgrade() -> None:
        assert post_event(client, clerk.update_membership(ALICE, acme, "org:member")).status_code == 200

    assert [m.role for m in held_lookup(api, clerk, ALICE, downgrade)] == ["org:admin"]
    assert cached(redis, ALICE) is None
    assert [m.role for m in api.get_memberships(ALICE)] == ["org:member"]


def test_deletion_racing_a_rejoin_ends_as_clerk_says(
    client: FlaskClient,
    cache: MembershipCache,
    redis: Redis,
    clerk: ClerkStandIn,
    run_worker: Callable[[], int],
) -> None:
    """Removed, then re-added; the webhooks arrive re-join first, removal last, around a held fill."""
    acme = cached_member(clerk, cache, ALICE)
    removed = clerk.remove_membership(ALICE, acme)
    rejoined = clerk.add_membership(ALICE, acme, "org:member")

    def late_removal() -> None:
        assert post_event(client, removed).status_code == 200

    assert post_event(client, rejoined).status_code == 200
    held_lookup(cache, clerk, ALICE, late_removal)
    run_worker()
    assert [m.organization_id for m in cache.get_memberships(ALICE)] == [acme]  # the late delete did not revoke
    assert cached(redis, ALICE) == truth(clerk, ALICE)


@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_created_and_deleted_in_any_order_end_as_clerk_says(
    client: FlaskClient,
    cache: MembershipCache,
    redis: Redis,
    clerk: ClerkStandIn,
    run_worker: Callable[[], int],
    order: str,
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    globex = clerk.create_org("Globex")["data"]["id"]
    clerk.add_membership(ALICE, globex)
    cache.get_memberships(ALICE)
    events = [clerk.add_membership(ALICE, acme), clerk.remove_membership(ALICE, acme)]
    for event in events if order == "in order" else events[::-1]:
        assert post_event(client, event).status_code == 200
        assert [m.organization_id for m in cache.get_memberships(ALICE)] == [globex]
    run_worker()
    assert cached(redis, ALICE) == truth(clerk, ALICE)


def test_a_thousand_forced_stale_fill_races_store_nothing_stale(
    client: FlaskClient, api: ReadApi, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Each round: a lookup reads Clerk, the membership flips and its webhook is acknowledged,
    then the lookup tries to store what it read. Nothing stale may be stored or served."""
    acme = clerk.create_org("Acme")["data"]["id"]
    stale_stored = stale_served = 0
    for round_number in range(1000):
        api.invalidate(ALICE)  # so the held lookup below misses and goes to Clerk
        member_now = bool(clerk.memberships_of(ALICE))

        def flip(member_now: bool = member_now) -> None:
            event = clerk.remove_membership(ALICE, acme) if member_now else clerk.add_membership(ALICE, acme)
            assert post_event(client, event).status_code == 200

        held_lookup(api, clerk, ALICE, flip)
        stored = cached(redis, ALICE)
        if stored is not None and stored != truth(clerk, ALICE):
            stale_stored += 1
        if round_number % 10 == 0 and bool(api.get_memberships(ALICE)) == member_now:
            stale_served += 1
    assert (stale_stored, stale_served) == (0, 0)
    assert api.stats.snapshot()["fills_refused"] == 1000


@pytest.mark.parametrize("change", ["rename", "delete"])
def test_org_event_voids_a_first_fill_not_yet_in_the_org_index(
    client: FlaskClient, api: ReadApi, redis: Redis, clerk: ClerkStandIn, change: str
) -> None:
    """The user was never cached, so the org index cannot name them while their first fill runs."""
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme)

    def org_changes() -> None:
        event = clerk.update_org(acme, name="Acme Renamed") if change == "rename" else clerk.delete_org(acme)
        assert post_event(client, event).status_code == 200

    held_lookup(api, clerk, ALICE, org_changes)
    assert cached(redis, ALICE) is None
    assert not lease_held(redis, ALICE)  # a refused fill gives the lease back
    assert [(m.organization_id, m.organization_name) for m in api.get_memberships(ALICE)] == (
        [(acme, "Acme Renamed")] if change == "rename" else []
    )


def test_org_deleted_while_the_worker_refreshes_a_new_member(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, worker_process: object
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    globex = clerk.create_org("Globex")["data"]["id"]
    clerk.add_membership(ALICE, globex)
    cache.get_memberships(ALICE)
    with clerk.hold(ALICE) as gate:
        assert post_event(client, clerk.add_membership(ALICE, acme)).status_code == 200
        assert gate.wait_arrived(timeout=20)  # the worker process read [Acme, Globex] from Clerk
        assert post_event(client, clerk.delete_org(acme)).status_code == 200
    wait_until_drained(redis)
    assert cached(redis, ALICE) is None  # the worker's fill was refused
    assert [m.organization_id for m in cache.get_memberships(ALICE)] == [globex]


def test_a_rename_after_the_patch_read_clerk_voids_the_patch(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    """The patch job takes its leases, reads the org from Clerk, and a second rename lands before it writes."""
    from cache.contract import encode_memberships, with_org_details
    from cache.protocol import Fill, new_token
    from worker.store import RefreshStore

    acme = cached_member(clerk, cache, ALICE)
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    store, token = RefreshStore(cache.redis), new_token()
    [(_, stash)] = store.acquire_patch_many([(ALICE, token)], 15_000)
    assert stash is not None
    read_by_the_job = clerk.org(acme)

    assert post_event(client, clerk.update_org(acme, name="Acme 3")).status_code == 200

    stale = encode_memberships(with_org_details(decode_memberships(stash.value), acme, read_by_the_job))
    assert store.fill_many([Fill(ALICE, token, stale, (acme,))], 300) == [False]
    assert cached(redis, ALICE) is None
    run_worker()
    assert [m.organization_name for m in cache.get_memberships(ALICE)] == ["Acme 3"]


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
