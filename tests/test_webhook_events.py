"""Signed Clerk events in, through the real intake and the real RQ worker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from redis import Redis
from rq import Worker

from cache import MembershipCache
from cache.contract import user_orgs_key
from cache.io import SyncIO
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import new_message_id, new_signing_secret
from devstack.waiting import wait_until
from tests.support import (
    ALICE,
    BOB,
    SIGNING_SECRET,
    cached_member,
    clear_drain_marker,
    drop_queued_jobs,
    indexed_members,
    intake_client,
    org_patch_keys,
    orgs_awaiting_patch,
    orgs_with_member,
    pending_users,
    post_event,
    queued_jobs,
    refreshing_users,
    scheduled_jobs,
    stash_exists,
    stashed_users,
    stored,
    work_burst,
)
from worker.__main__ import TAKE_OVER_DELAY_S
from worker.store import RefreshStore


def org_ids(cache: MembershipCache, user_id: str) -> list[str]:
    return sorted(m.organization_id for m in cache.get_memberships(user_id))


def test_membership_deleted_revokes_at_the_2xx_and_worker_refreshes(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex")
    assert org_ids(cache, ALICE) == sorted([acme, globex])

    response = post_event(client, clerk.remove_membership(ALICE, acme))

    assert response.status_code == 200 and response.json == {"status": "processed"}
    assert redis.exists(user_orgs_key(ALICE)) == 0  # revoked before any worker ran
    assert run_worker() == 1
    assert [m["organizationId"] for m in stored(redis, ALICE)] == [globex]
    calls = clerk.call_count()
    assert org_ids(cache, ALICE) == [globex]
    assert clerk.call_count() == calls  # served from the refreshed key


def test_membership_created_and_updated_reach_the_lookup(
    client: FlaskClient, cache: MembershipCache, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    assert cache.get_memberships(ALICE) == []
    assert post_event(client, clerk.add_membership(ALICE, acme, "org:member")).status_code == 200
    assert [(m.organization_id, m.role) for m in cache.get_memberships(ALICE)] == [(acme, "org:member")]
    assert post_event(client, clerk.update_membership(ALICE, acme, "org:admin")).status_code == 200
    run_worker()
    assert [(m.organization_id, m.role) for m in cache.get_memberships(ALICE)] == [(acme, "org:admin")]


def test_organization_updated_renames_for_every_cached_member(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme", slug="acme")["data"]["id"]
    members = [f"user_2member{i:04d}" for i in range(30)]
    for user_id in members:
        clerk.add_membership(user_id, acme)
        cache.get_memberships(user_id)

    response = post_event(client, clerk.update_org(acme, name="Acme Renamed", slug="acme-renamed"))

    assert response.status_code == 200
    assert all(redis.exists(user_orgs_key(u)) == 0 for u in members)
    assert run_worker() == 1  # one job for the whole org
    for user_id in members:
        value = stored(redis, user_id)
        assert [(v["organizationName"], v["organizationSlug"]) for v in value] == [("Acme Renamed", "acme-renamed")]


def test_organization_deleted_removes_it_for_every_member_without_calling_clerk(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    globex = clerk.create_org("Globex")["data"]["id"]
    for user_id in (ALICE, BOB):
        clerk.add_membership(user_id, acme)
        clerk.add_membership(user_id, globex)
        cache.get_memberships(user_id)

    assert post_event(client, clerk.delete_org(acme)).status_code == 200

    assert redis.exists(user_orgs_key(ALICE), user_orgs_key(BOB)) == 0
    assert indexed_members(redis, acme) == set()
    clerk.reset_counts()
    assert run_worker() == 1
    assert clerk.call_count() == 0  # the patch drops the org: nothing to read
    for user_id in (ALICE, BOB):
        assert [m["organizationId"] for m in stored(redis, user_id)] == [globex]
    assert org_ids(cache, ALICE) == org_ids(cache, BOB) == [globex]


def test_user_deleted_removes_the_key_and_does_not_refetch(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    cached_member(clerk, cache, ALICE)
    calls = clerk.call_count()

    assert post_event(client, clerk.delete_user(ALICE)).status_code == 200

    assert redis.exists(user_orgs_key(ALICE)) == 0
    run_worker()
    assert redis.exists(user_orgs_key(ALICE)) == 0
    assert clerk.call_count() == calls
    assert cache.get_memberships(ALICE) == []  # Clerk answers 404: no orgs, nothing stored
    assert redis.exists(user_orgs_key(ALICE)) == 0


def test_unknown_event_types_are_acknowledged_and_ignored(client: FlaskClient, redis: Redis) -> None:
    redis.set(user_orgs_key(ALICE), "[]")
    event = {"type": "session.created", "object": "event", "data": {"user_id": ALICE}}
    response = post_event(client, event)
    assert response.status_code == 200 and response.json == {"status": "ignored"}
    assert redis.keys("*") == [user_orgs_key(ALICE)]


def test_redeliveries_of_one_svix_id_do_one_unit_of_work(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = cached_member(clerk, cache, ALICE)
    event = clerk.update_membership(ALICE, acme, "org:admin")
    msg_id = new_message_id()

    statuses = [post_event(client, event, msg_id=msg_id).json["status"] for _ in range(5)]  # type: ignore[index]

    assert statuses == ["processed"] + ["duplicate"] * 4
    clerk.reset_counts()
    assert run_worker() == 1
    assert clerk.call_count() == 1
    # a duplicate arriving after the refresh must not invalidate again
    assert post_event(client, event, msg_id=msg_id).json == {"status": "duplicate"}
    assert redis.exists(user_orgs_key(ALICE)) == 1


def test_a_burst_about_one_user_costs_one_job_and_one_clerk_call(
    client: FlaskClient, cache: MembershipCache, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    orgs = [clerk.create_org(f"O{i}")["data"]["id"] for i in range(10)]
    clerk.add_membership(ALICE, orgs[0])
    cache.get_memberships(ALICE)
    for org in orgs[1:]:
        assert post_event(client, clerk.add_membership(ALICE, org)).status_code == 200
    clerk.reset_counts()
    assert run_worker() == 1
    assert clerk.call_count() == 1
    assert org_ids(cache, ALICE) == sorted(orgs)


def test_either_rotated_secret_verifies(redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn) -> None:
    old, new = new_signing_secret(), new_signing_secret()
    client = intake_client(redis_server.url, secret=f"{old} {new}")
    acme = clerk.create_org("Acme")["data"]["id"]
    assert post_event(client, clerk.add_membership(ALICE, acme), secret=old).status_code == 200
    assert post_event(client, clerk.add_membership(BOB, acme), secret=new).status_code == 200
    assert post_event(client, clerk.remove_membership(BOB, acme), secret=SIGNING_SECRET).status_code == 401


def test_stale_fill_after_deletion_is_refused(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    """A lookup reads Clerk before the removal, the webhook lands, then the read returns."""
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme)
    results: list[list[str]] = []
    with clerk.hold(ALICE) as gate:
        reader = threading.Thread(target=lambda: results.append(org_ids(cache, ALICE)))
        reader.start()
        assert gate.wait_arrived()
        assert post_event(client, clerk.remove_membership(ALICE, acme)).status_code == 200
    reader.join(5)
    assert results == [[acme]]  # the in-flight caller gets its own pre-event answer...
    assert redis.exists(user_orgs_key(ALICE)) == 0  # ...but it is not stored
    assert cache.stats.snapshot()["fills_refused"] == 1
    assert org_ids(cache, ALICE) == []


def test_revoked_membership_is_absent_from_the_very_next_lookup_with_no_worker(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme, "org:admin")
    assert cache.get_membership(ALICE, acme) is not None
    assert post_event(client, clerk.remove_membership(ALICE, acme)).status_code == 200
    assert cache.get_membership(ALICE, acme) is None  # no worker has run in this test
    assert queued_jobs(redis) == 1


def test_an_org_with_a_thousand_cached_members_is_fixed_by_one_job(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    members = [f"user_2member{i:05d}" for i in range(1000)]
    for user_id in members:
        clerk.add_membership(user_id, acme)
        cache.get_memberships(user_id)
    assert len(indexed_members(redis, acme)) == 1000

    assert post_event(client, clerk.update_org(acme, name="Acme Renamed")).status_code == 200

    assert run_worker() == 1
    values = redis.mget([user_orgs_key(u) for u in members])
    assert all(v is not None and json.loads(v)[0]["organizationName"] == "Acme Renamed" for v in values)


def test_membership_event_without_a_user_id_re_reads_the_whole_org(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    for user_id in (ALICE, BOB):
        clerk.add_membership(user_id, acme, "org:admin")
        cache.get_memberships(user_id)
    event = clerk.remove_membership(ALICE, acme)
    del event["data"]["public_user_data"]
    assert post_event(client, event).status_code == 200
    assert redis.exists(user_orgs_key(ALICE), user_orgs_key(BOB)) == 0
    run_worker()  # re-reads members in full: a patch of the old value would bring Alice's admin role back
    assert json.loads(redis.get(user_orgs_key(ALICE)) or "[]") == []
    assert cache.get_membership(ALICE, acme) is None
    assert cache.get_membership(BOB, acme) is not None


def test_a_redelivery_enqueues_the_job_a_lost_enqueue_left_out(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = cached_member(clerk, cache, ALICE)
    event, msg_id = clerk.update_membership(ALICE, acme, "org:admin"), new_message_id()
    assert post_event(client, event, msg_id=msg_id).json == {"status": "processed"}
    drop_queued_jobs(redis)  # as if the enqueue was lost
    clear_drain_marker(redis)

    assert post_event(client, event, msg_id=msg_id).json == {"status": "duplicate"}

    assert run_worker() == 1
    assert [m.role for m in cache.get_memberships(ALICE)] == ["org:admin"]


def test_a_refresh_that_cannot_reach_clerk_leaves_the_key_deleted_and_retries(
    client: FlaskClient, cache: MembershipCache, redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    acme = cached_member(clerk, cache, ALICE, "org:admin")
    assert post_event(client, clerk.update_membership(ALICE, acme, "org:member")).status_code == 200

    clerk.fail_next(100, status=503)
    work_burst(redis_server.url)

    assert redis.exists(user_orgs_key(ALICE)) == 0  # deleted, never the outdated admin role
    assert pending_users(redis) == {ALICE}
    assert scheduled_jobs(redis) == 1  # RQ retries it after 2 s
    clerk.clear_failures()
    time.sleep(2.2)
    work_burst(redis_server.url, with_scheduler=True)
    assert [m["role"] for m in stored(redis, ALICE)] == ["org:member"]


def test_users_taken_by_a_job_that_died_are_refreshed_by_the_next_one(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    for user_id in (ALICE, BOB):
        clerk.add_membership(user_id, acme)
        cache.get_memberships(user_id)
        assert post_event(client, clerk.update_membership(user_id, acme, "org:admin")).status_code == 200
    # A first run of the job took both users, then its worker was killed; RQ runs the job again.
    assert sorted(RefreshStore(cache.redis).take_pending(10, "a-job-that-died")) == sorted([ALICE, BOB])
    assert pending_users(redis) == set()

    assert run_worker() == 1
    for user_id in (ALICE, BOB):
        assert stored(redis, user_id)[0]["role"] == "org:admin"
    assert refreshing_users(redis) == set()


def test_after_the_last_retry_the_job_is_failed_and_the_key_stays_deleted(
    redis_server: RedisServer, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    client = intake_client(redis_server.url, REFRESH_RETRY_INTERVALS="0,0")
    acme = cached_member(clerk, cache, ALICE, "org:admin")
    assert post_event(client, clerk.update_membership(ALICE, acme, "org:member")).status_code == 200
    clerk.fail_next(1000, status=500)
    bursts = [work_burst(redis_server.url, with_scheduler=True) for _ in range(3)]  # the first run and two retries
    assert bursts[-1].failed == 1
    assert redis.exists(user_orgs_key(ALICE)) == 0
    assert pending_users(redis) == {ALICE}  # the next drain tries again


def test_an_org_rename_is_patched_from_one_clerk_read(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = clerk.create_org("Acme", slug="acme")["data"]["id"]
    globex = clerk.create_org("Globex")["data"]["id"]
    members = [f"user_2member{i:04d}" for i in range(50)]
    for user_id in members:
        clerk.add_membership(user_id, acme, "org:admin")
        clerk.add_membership(user_id, globex)
        cache.get_memberships(user_id)
    assert post_event(client, clerk.update_org(acme, name="Acme 2", slug="acme-2")).status_code == 200
    assert redis.exists(*[user_orgs_key(u) for u in members]) == 0  # nothing pre-rename is served
    clerk.reset_counts()

    assert run_worker() == 1

    assert clerk.call_count("/v1/organizations/") == 1 and clerk.call_count("/v1/users/") == 0
    for user_id in members:
        value = {m["organizationId"]: m for m in stored(redis, user_id)}
        assert (value[acme]["organizationName"], value[acme]["organizationSlug"]) == ("Acme 2", "acme-2")
        assert value[acme]["role"] == "org:admin" and value[globex]["organizationName"] == "Globex"
    assert stashed_users(redis) == [] and org_patch_keys(redis) == []


def test_a_user_change_after_an_org_stash_wins_over_the_patch(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = cached_member(clerk, cache, ALICE, "org:admin")
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    assert post_event(client, clerk.update_membership(ALICE, acme, "org:member")).status_code == 200
    assert not stash_exists(redis, ALICE)  # the stash predates the role change
    run_worker()
    assert [(m.organization_name, m.role) for m in cache.get_memberships(ALICE)] == [("Acme 2", "org:member")]


def test_renames_of_two_orgs_before_the_worker_runs(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex")
    cache.get_memberships(ALICE)
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    assert post_event(client, clerk.update_org(globex, name="Globex 2")).status_code == 200
    assert post_event(client, clerk.update_org(acme, name="Acme 3")).status_code == 200
    run_worker()
    assert sorted(m["organizationName"] for m in stored(redis, ALICE)) == ["Acme 3", "Globex 2"]
    assert stashed_users(redis) == [] and orgs_awaiting_patch(redis) == set()


def test_a_starting_worker_resumes_org_patches_whose_job_was_lost(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, request: Any
) -> None:
    acme = cached_member(clerk, cache, ALICE)
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    drop_queued_jobs(redis)  # the job was lost
    clear_drain_marker(redis)
    request.getfixturevalue("worker_process")  # a worker (re)starts
    wait_until(lambda: "Acme 2" in (redis.get(user_orgs_key(ALICE)) or ""), 20)


def test_a_patch_never_extends_how_long_memberships_go_unread(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = cached_member(clerk, cache, ALICE)
    redis.expire(user_orgs_key(ALICE), 40)  # read from Clerk 260 s ago
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    run_worker()
    assert "Acme 2" in (redis.get(user_orgs_key(ALICE)) or "")
    assert 0 < redis.ttl(user_orgs_key(ALICE)) <= 40


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


def test_a_rename_while_the_patch_reads_clerk_ends_with_the_latest_name(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    from worker.jobs import drain_pending_refreshes

    acme = cached_member(clerk, cache, ALICE)
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    clerk.reset_counts()
    results: list[dict[str, int]] = []
    job = threading.Thread(target=lambda: results.append(drain_pending_refreshes()))
    with clerk.hold(acme) as gate:  # the patch job's org read answers "Acme 2", held...
        job.start()
        assert gate.wait_arrived()
        assert post_event(client, clerk.update_org(acme, name="Acme 3")).status_code == 200  # ...while a rename lands
    job.join(10)
    assert not job.is_alive() and results == [{"patched": 1, "refreshed": 0, "skipped": 0}]
    # the fill from the held read was refused, and the job patched again from a second read of the org
    assert "Acme 3" in (redis.get(user_orgs_key(ALICE)) or "")  # not "Acme 2", and not left cold
    assert clerk.call_count("/v1/organizations/") == 2 and clerk.call_count("/v1/users/") == 0
    assert run_worker() == 2  # the jobs each rename queued (this test ran the drain itself)...
    assert clerk.call_count() == 2  # ...find nothing left to read
    assert [m.organization_name for m in cache.get_memberships(ALICE)] == ["Acme 3"]
    assert stashed_users(redis) == [] and orgs_awaiting_patch(redis) == set()


def test_a_user_deleted_while_stashed_costs_no_clerk_call(
    client: FlaskClient, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, run_worker: Callable[[], int]
) -> None:
    acme = cached_member(clerk, cache, ALICE)
    assert post_event(client, clerk.update_org(acme, name="Acme 2")).status_code == 200
    assert post_event(client, clerk.delete_user(ALICE)).status_code == 200
    clerk.reset_counts()
    run_worker()
    assert clerk.call_count("/v1/users/") == 0
    assert redis.exists(user_orgs_key(ALICE)) == 0 and not stash_exists(redis, ALICE)
    assert orgs_awaiting_patch(redis) == set()


def test_a_running_worker_sweeps_up_work_no_job_is_handling(
    cache: MembershipCache, redis: Redis, clerk: ClerkStandIn, request: Any, monkeypatch: Any
) -> None:
    """Users left pending with no job (a lost enqueue, or retries run out) are picked up by the periodic sweep.

    A starting worker also makes one take-over pass `TAKE_OVER_DELAY_S` after it starts, which would pick
    them up whatever the sweep does, so the work is orphaned only once that pass is over. The pass leaves
    no trace when it finds nothing (and whatever it could find, a sweep finds too), so its time is read
    from RQ's record of the worker's birth in Redis, which comes after the pass's timer is armed."""
    from cache.protocol import record_program, refresh_user

    sweep_s = 2  # RQ's idle dequeue blocks this long (`DrainWorker.for_interval`): a sweep at most every ~2 s
    monkeypatch.setenv("WORKER_SWEEP_SECONDS", str(sweep_s))
    request.getfixturevalue("worker_process")
    cached_member(clerk, cache, ALICE)
    take_over_over = worker_birth(cache.redis) + TAKE_OVER_DELAY_S + 1.0  # due, then 1 s for a pass of ~10 ms
    wait_until(lambda: time.time() > take_over_over, TAKE_OVER_DELAY_S + 10, what="the take-over pass")
    SyncIO(cache.redis).run(record_program([refresh_user(ALICE)]))  # queued for refresh, but no job is enqueued...
    clear_drain_marker(redis)
    assert queued_jobs(redis) == 0 and redis.exists(user_orgs_key(ALICE)) == 0
    wait_until(lambda: redis.exists(user_orgs_key(ALICE)), 2 * sweep_s, what="the sweep")  # ...until the sweep does
    assert [m["role"] for m in stored(redis, ALICE)] == ["org:member"]


def worker_birth(redis: Redis) -> float:
    """When the one worker process's RQ worker registered (epoch seconds), once it has."""
    wait_until(lambda: len(Worker.all(connection=redis)) == 1, 30, what="the worker to register")
    (worker,) = Worker.all(connection=redis)
    assert worker.birth_date is not None
    return worker.birth_date.timestamp()
