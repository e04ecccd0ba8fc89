"""Role and permission events, through the real intake and the real RQ worker: revoked at the 2xx.

A membership's ``permissions`` are its role's, so a role that loses a permission changes the value of
every cached holder though no event names them. These tests hold the issue's promise where a user
meets it: once the intake has answered 2xx, the very next lookup (no worker run yet) no longer sees
the permission, for one holder and for a thousand; and the worker then rewrites every holder's value
from one read of Clerk's role list.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from flask.testing import FlaskClient
from redis import Redis

from cache import MembershipCache
from cache.contract import CONTRACT_VERSION, CONTRACT_VERSION_KEY, role_index_key, user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.clerk_standin.server import ROLE_LIST_GATE
from devstack.signing import new_message_id
from service.redis_checks import claim_contract_version
from tests.support import ALICE, BOB, post_event, queued_jobs, stashed_users, stored
from worker.jobs import drain_pending_refreshes

BILLING = "org:billing"  # the stand-in gives it org:sys_memberships:read, org:billing:read, org:billing:manage
MANAGE = "org:billing:manage"
READ = "org:billing:read"


def permissions(cache: MembershipCache, user_id: str, org_id: str) -> set[str] | None:
    membership = cache.get_membership(user_id, org_id)
    return None if membership is None else set(membership.permissions)


def stored_permissions(redis: Redis, user_id: str) -> dict[str, set[str]] | None:
    value = stored(redis, user_id)
    return None if value is None else {m["organizationId"]: set(m["permissions"]) for m in value}


def billing_org(clerk: ClerkStandIn, *users: str) -> str:
    acme = clerk.create_org("Acme")["data"]["id"]
    for user_id in users:
        clerk.add_membership(user_id, acme, BILLING)
    return acme


def test_a_value_carries_the_memberships_permissions_system_ones_included(
    cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    globex = clerk.create_org("Globex")["data"]["id"]
    clerk.add_membership(ALICE, acme, "org:admin")
    clerk.add_membership(ALICE, globex, BILLING)

    cache.get_memberships(ALICE)

    value = stored_permissions(redis, ALICE)
    assert value is not None
    assert {"org:sys_memberships:manage", "org:sys_profile:delete"} <= value[acme]
    assert value[globex] == {"org:sys_memberships:read", READ, MANAGE}
    assert list(stored(redis, ALICE)[0]) == [
        "organizationId", "organizationSlug", "organizationName", "imageUrl", "role", "permissions",
    ]  # fmt: skip
    assert redis.smembers(role_index_key(BILLING)) == {ALICE}


def test_a_role_that_loses_a_permission_is_refused_at_the_next_lookup_with_no_worker(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    acme = billing_org(clerk, ALICE)
    assert permissions(cache, ALICE, acme) == {"org:sys_memberships:read", READ, MANAGE}

    response = post_event(client, clerk.update_role(BILLING, permissions=["org:sys_memberships:read", READ]))

    assert response.status_code == 200 and response.json == {"status": "processed"}
    assert permissions(cache, ALICE, acme) == {"org:sys_memberships:read", READ}  # no worker has run
    assert queued_jobs(redis) == 1


def test_a_role_held_by_a_thousand_cached_users_is_revoked_at_once_and_patched_from_one_clerk_read(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    holders = [f"user_2holder{i:05d}" for i in range(1000)]
    acme = billing_org(clerk, *holders)
    globex = clerk.create_org("Globex")["data"]["id"]
    clerk.add_membership(holders[0], globex, "org:member")
    for user_id in holders:
        cache.get_memberships(user_id)

    event = clerk.update_role(BILLING, permissions=[READ])
    assert post_event(client, event).status_code == 200

    assert redis.exists(*[user_orgs_key(u) for u in holders]) == 0  # nothing pre-change is served
    assert permissions(cache, holders[-1], acme) == {READ}
    clerk.reset_counts()
    assert run_worker() == 1
    assert clerk.call_count("/v1/organization_roles") == 1 and clerk.call_count("/v1/users/") == 0
    values = redis.mget([user_orgs_key(u) for u in holders])
    assert all(v is not None and set(json.loads(v)[-1]["permissions"]) == {READ} for v in values[1:])
    assert stored_permissions(redis, holders[0]) == {acme: {READ}, globex: {"org:sys_memberships:read"}}
    assert stashed_users(redis) == []


def test_a_deleted_permission_is_refused_at_the_next_lookup_though_the_event_names_only_its_id(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = billing_org(clerk, ALICE, BOB)
    cache.get_memberships(ALICE)
    cache.get_memberships(BOB)

    event = clerk.delete_permission(MANAGE)
    assert set(event["data"]) == {"object", "id", "deleted"}
    assert post_event(client, event).status_code == 200

    assert permissions(cache, ALICE, acme) == {"org:sys_memberships:read", READ}
    clerk.reset_counts()
    assert run_worker() == 1
    assert clerk.call_count("/v1/users/") == 0  # BOB was patched from the role list, not re-read
    assert stored_permissions(redis, BOB) == {acme: {"org:sys_memberships:read", READ}}


def test_a_renamed_permission_reaches_every_holder(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = billing_org(clerk, ALICE)
    cache.get_memberships(ALICE)

    assert post_event(client, clerk.update_permission(MANAGE, new_key="org:billing:admin")).status_code == 200

    assert permissions(cache, ALICE, acme) == {"org:sys_memberships:read", READ, "org:billing:admin"}
    run_worker()
    assert stored_permissions(redis, ALICE) == {acme: {"org:sys_memberships:read", READ, "org:billing:admin"}}


def test_a_role_deleted_after_its_members_were_moved_off_leaves_no_trace_of_it(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = billing_org(clerk, ALICE)
    cache.get_memberships(ALICE)
    assert post_event(client, clerk.update_membership(ALICE, acme, "org:member")).status_code == 200
    deleted = clerk.delete_role(BILLING)
    assert set(deleted["data"]) == {"object", "id", "slug", "deleted"}

    assert post_event(client, deleted).status_code == 200

    membership = cache.get_membership(ALICE, acme)
    assert membership is not None and (membership.role, membership.permissions) == (
        "org:member",
        ("org:sys_memberships:read",),
    )
    run_worker()
    assert stored_permissions(redis, ALICE) == {acme: {"org:sys_memberships:read"}}
    assert stashed_users(redis) == []


def test_duplicate_and_reordered_role_events_end_at_clerks_state(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = billing_org(clerk, ALICE)
    cache.get_memberships(ALICE)
    first = clerk.update_role(BILLING, permissions=[READ])
    second = clerk.update_role(BILLING, permissions=[READ, MANAGE])
    second_id = new_message_id()

    assert post_event(client, second, msg_id=second_id).json == {"status": "processed"}
    assert post_event(client, second, msg_id=second_id).json == {"status": "duplicate"}
    assert permissions(cache, ALICE, acme) == {READ, MANAGE}
    assert post_event(client, first).json == {"status": "processed"}  # late: it triggers a re-read, not a delta

    assert permissions(cache, ALICE, acme) == {READ, MANAGE}
    run_worker()
    assert stored_permissions(redis, ALICE) == {acme: {READ, MANAGE}}


def test_a_lookup_that_read_clerk_before_a_role_change_does_not_store_its_answer(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Alice's first fill is in flight (not in any index yet) when the role loses a permission."""
    acme = billing_org(clerk, ALICE)
    answers: list[set[str] | None] = []
    with clerk.hold(ALICE) as gate:
        reader = threading.Thread(target=lambda: answers.append(permissions(cache, ALICE, acme)))
        reader.start()
        assert gate.wait_arrived()
        assert post_event(client, clerk.update_role(BILLING, permissions=[READ])).status_code == 200
    reader.join(5)

    assert answers == [{"org:sys_memberships:read", READ, MANAGE}]  # its own answer, read before the 2xx...
    assert redis.exists(user_orgs_key(ALICE)) == 0  # ...but not stored
    assert permissions(cache, ALICE, acme) == {READ}


def test_a_role_change_while_the_worker_reads_the_role_list_ends_with_the_latest_permissions(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = billing_org(clerk, ALICE)
    cache.get_memberships(ALICE)
    assert post_event(client, clerk.update_role(BILLING, permissions=[READ])).status_code == 200
    drained: list[dict[str, int]] = []
    with clerk.hold(ROLE_LIST_GATE) as gate:
        # the drain job's own function, on a thread (RQ's worker wants the main thread for its signals)
        worker = threading.Thread(target=lambda: drained.append(drain_pending_refreshes()))
        worker.start()
        assert gate.wait_arrived()  # the worker has read the list with READ only
        assert post_event(client, clerk.update_role(BILLING, permissions=[MANAGE])).status_code == 200
    worker.join(30)
    assert drained and drained[0]["patched"] == 1  # its first patch was refused; the next pass patched
    run_worker()

    assert permissions(cache, ALICE, acme) == {MANAGE}
    assert stored_permissions(redis, ALICE) == {acme: {MANAGE}}


def test_a_role_unknown_to_clerks_list_is_stored_as_it_is_and_its_holder_re_read_in_full(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme, "basic_member")  # a legacy key: opaque, stored as Clerk spells it
    clerk.add_membership(BOB, acme, BILLING)
    assert permissions(cache, ALICE, acme) == {"org:sys_memberships:read"}
    cache.get_memberships(BOB)
    assert stored(redis, ALICE)[0]["role"] == "basic_member"

    assert post_event(client, clerk.delete_permission(MANAGE)).status_code == 200
    clerk.reset_counts()
    run_worker()

    assert clerk.call_count(f"/v1/users/{ALICE}/") == 1  # the list has no 'basic_member': re-read in full
    assert clerk.call_count(f"/v1/users/{BOB}/") == 0
    assert stored_permissions(redis, ALICE) == {acme: {"org:sys_memberships:read"}}


def test_a_value_without_permissions_from_an_older_writer_is_never_served(
    cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    acme = billing_org(clerk, ALICE)
    v1 = [{"organizationId": acme, "organizationSlug": None, "organizationName": "Acme", "imageUrl": None,
           "role": BILLING}]  # fmt: skip
    redis.set(user_orgs_key(ALICE), json.dumps(v1), px=60_000)

    assert permissions(cache, ALICE, acme) == {"org:sys_memberships:read", READ, MANAGE}  # from Clerk


def test_the_contract_version_is_written_and_a_newer_one_is_reported(redis: Redis) -> None:
    assert claim_contract_version(redis) is None
    assert redis.get(CONTRACT_VERSION_KEY) == str(CONTRACT_VERSION)
    redis.set(CONTRACT_VERSION_KEY, CONTRACT_VERSION + 1)

    newer = claim_contract_version(redis)

    assert newer is not None and f"version {CONTRACT_VERSION + 1}" in newer
    assert redis.get(CONTRACT_VERSION_KEY) == str(CONTRACT_VERSION + 1)  # never lowered
