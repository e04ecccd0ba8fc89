"""The acknowledged near-cache (issue 22) through real processes: app processes with a near-cache
(tests/near_app.py), the Procfile's web (gunicorn) as the intake, a real redis-server, the Clerk
stand-in, and no worker anywhere, so each revocation holds at the intake's 2xx alone.

What each test proves is what a user of the app sees: after the 2xx, no process answers a lookup
with the revoked membership or permission, whether it acknowledged the invalidation, was
SIGSTOPped through it, lost its subscription, or had a read's reply overtaken by it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import requests
from redis import Redis

from cache.contract import NEAR_CACHES_KEY
from cache.near import NearCache, clock
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.redis_topology import SentinelTopology
from devstack.signing import signed_event
from devstack.stack import REPO
from devstack.waiting import wait_until
from tests.redis_proxy import ReplyHoldingProxy
from tests.support import (
    ALICE,
    BOB,
    METRICS_AUTH,
    SIGNING_SECRET,
    make_cache,
    near_app_env,
    orgs_with_member,
    procfile_process,
    stack_env,
)

LEASE_MS = 2000
BILLING = "org:billing"  # the stand-in gives it org:sys_memberships:read, org:billing:read, org:billing:manage
MANAGE = "org:billing:manage"


class App:
    """One app process with a near-cache (tests/near_app.py), asked over stdin, answering on stdout."""

    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.near_app", kind],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def reply(self, timeout_s: float = 30) -> Any:
        try:
            return json.loads(self._lines.get(timeout=timeout_s))
        except queue.Empty:
            raise AssertionError(f"the {self.kind} app did not answer within {timeout_s} s") from None

    def ask(self, line: str) -> Any:
        self.send(line)
        return self.reply()

    def get(self, user_id: str) -> Any:
        return self.ask(f"get {user_id}")

    def stats(self) -> Any:
        return self.ask("stats")

    def holds(self, user_id: str) -> bool:
        return bool(self.ask(f"holds {user_id}")["holds"])

    def wait_serving(self) -> None:
        assert self.ask("serving 20")["serving"], f"the {self.kind} app's near-cache never served"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a test may have left it stopped
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def intake(redis_url: str, clerk: ClerkStandIn) -> Iterator[str]:
    """The Procfile's web process; its base URL."""
    env = stack_env(redis_url, clerk)
    url = f"http://127.0.0.1:{env['PORT']}"
    with procfile_process("web", env):
        wait_until(lambda: _answers(url + "/healthz"), 60, what="gunicorn", poll_s=0.1)
        yield url


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def apps(redis_url: str, clerk: ClerkStandIn, *kinds: str, **extra: str) -> Iterator[list[App]]:
    started = [App(kind, near_app_env(redis_url, clerk, LEASE_MS, **extra)) for kind in kinds]
    try:
        for app in started:
            app.wait_serving()
        yield started
    finally:
        for app in started:
            app.stop()


def post(url: str, event: dict[str, Any]) -> requests.Response:
    body, headers = signed_event(SIGNING_SECRET, event)
    return requests.post(url + "/webhooks/clerk", data=body, headers=headers, timeout=15)  # Svix's limit


def metric(url: str, name: str) -> float:
    text = requests.get(url + "/metrics", headers=METRICS_AUTH, timeout=5).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return sum(values)


def served_locally(app: App, user_id: str) -> Any:
    """Look the user up until the answer is a local hit (the first lookup fills the tier); that answer."""
    app.get(user_id)
    answer = app.get(user_id)
    assert answer["local"], f"the {app.kind} app did not serve {user_id} from its near-cache"
    return answer["orgs"]


# -- after each 2xx, no process serves a stale lookup ------------------------------------------------


REVOKING = [
    "membership_removed",
    "membership_updated",
    "org_updated",
    "org_deleted",
    "user_deleted",
    "role_updated",
    "permission_deleted",
]


@pytest.mark.parametrize("event", REVOKING)
def test_after_the_2xx_no_app_process_serves_the_revoked_access_locally(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn, event: str
) -> None:
    """Three app processes (two sync, one async) serve ALICE from their own memory; the revoking event's
    2xx comes only after each dropped her (a user's event) or everything (an org, role or permission event,
    whose members only Redis's indexes know)."""
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex", role=BILLING)
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    with intake(redis_server.url, clerk) as url, apps(redis_server.url, clerk, "sync", "sync", "async") as running:
        for app in running:
            orgs = served_locally(app, ALICE)
            assert acme in orgs and MANAGE in orgs[acme]  # what a stale answer would show
            assert initech in served_locally(app, BOB)

        envelope = {
            "membership_removed": lambda: clerk.remove_membership(ALICE, acme),
            "membership_updated": lambda: clerk.update_membership(ALICE, acme, "org:member"),
            "org_updated": lambda: clerk.update_org(acme, name="Acme Renamed"),
            "org_deleted": lambda: clerk.delete_org(acme),
            "user_deleted": lambda: clerk.delete_user(ALICE),
            "role_updated": lambda: clerk.update_role(BILLING, permissions=["org:sys_memberships:read"]),
            "permission_deleted": lambda: clerk.delete_permission(MANAGE),
        }[event]()
        response = post(url, envelope)
        assert response.status_code == 200 and response.json() == {"status": "processed"}

        for app in running:
            orgs = app.get(ALICE)["orgs"]
            if event in ("membership_removed", "org_deleted"):
                assert acme not in orgs and globex in orgs
            elif event == "user_deleted":
                assert orgs == {}
            elif event == "org_updated":
                assert orgs[acme][0] == "Acme Renamed"
            else:  # the role or its permission changed: MANAGE is gone from acme's membership
                assert MANAGE not in orgs[acme]
            stats = app.stats()
            assert stats["acks"] == 1 and stats["invalidations"] == 1
            # a user's event drops that user; the others, whose members only Redis's indexes know, everything
            assert app.holds(BOB) is (event in ("membership_removed", "membership_updated", "user_deleted"))
        assert metric(url, "clerk_org_cache_near_lapsed_total") == 0  # every process acknowledged


# -- a process that cannot acknowledge ----------------------------------------------------------------


def test_a_sigstopped_app_process_delays_the_2xx_by_its_lease_and_serves_nothing_stale_after(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    with intake(redis_server.url, clerk) as url, apps(redis_server.url, clerk, "sync", "async") as (stopped, other):
        assert acme in served_locally(stopped, ALICE) and acme in served_locally(other, ALICE)
        os.kill(stopped.process.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            response = post(url, clerk.remove_membership(ALICE, acme))  # fails the test past Svix's 15 s
            elapsed = time.perf_counter() - started
        finally:
            os.kill(stopped.process.pid, signal.SIGCONT)
        assert response.status_code == 200
        print(f"2xx after {elapsed:.3f} s with one app process stopped (lease {LEASE_MS} ms)")
        assert metric(url, "clerk_org_cache_near_lapsed_total") == 1  # it waited the stopped one's lease out
        assert acme not in other.get(ALICE)["orgs"] and other.stats()["acks"] == 1

        answer = stopped.get(ALICE)  # the first lookup after SIGCONT: its lease ran out while it was stopped
        assert acme not in answer["orgs"] and not answer["local"]
        # its renewal's reply came after its lease ran out (lapsed), or Redis refused it (renewal_refused)
        wait_until(lambda: stopped.stats()["registrations"] == 2, 10, what="the stopped process to register again")
        assert set(stopped.stats()["drops"]) <= {"lapsed", "renewal_refused"}
        assert not stopped.holds(ALICE)
        assert acme not in stopped.get(ALICE)["orgs"]


def test_a_process_whose_subscription_is_killed_serves_no_local_hit_until_registered_again_with_an_empty_tier(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    with intake(redis_server.url, clerk) as url, apps(redis_server.url, clerk, "sync") as (app,):
        assert acme in served_locally(app, ALICE) and initech in served_locally(app, BOB)
        first_id = app.stats()["id"]
        (subscription,) = [c for c in redis.client_list() if c["name"] == "clerk-org-cache-near-sub"]
        redis.client_kill_filter(_id=subscription["id"])

        assert post(url, clerk.remove_membership(ALICE, acme)).status_code == 200
        assert acme not in app.get(ALICE)["orgs"]

        wait_until(lambda: app.stats()["registrations"] == 2, 10, what="the app to register again")
        stats = app.stats()
        assert any(reason.startswith("subscription_lost") for reason in stats["drops"]), stats["drops"]
        assert stats["id"] != first_id
        assert redis.zscore(NEAR_CACHES_KEY, first_id) is None  # the old id is gone: no revocation waits for it
        assert not app.holds(BOB)  # emptied, though no event named BOB
        assert not app.get(BOB)["local"] and app.get(BOB)["local"]  # from Redis, then kept again


# -- an invalidation that overtakes a read's reply ----------------------------------------------------


def test_an_invalidation_that_overtakes_a_reads_reply_is_not_undone_by_keeping_the_old_value(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    """The app's lookups reach Redis through a proxy that holds Redis's replies; its near-cache's control
    plane does not. ALICE's GET runs in Redis (old value), the revocation is recorded, published and
    acknowledged (2xx), and only then does the GET's reply reach the app: that value must not be kept."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    proxy = ReplyHoldingProxy(redis_server.port)
    writer = make_cache(redis_server.url, clerk.url)
    try:
        with ExitStack() as stack:
            url = stack.enter_context(intake(redis_server.url, clerk))
            (app,) = stack.enter_context(
                apps(proxy.url, clerk, "sync", NEAR_REDIS_URL=redis_server.url, LOOKUP_SOCKET_TIMEOUT_S="20")
            )
            assert initech in served_locally(app, BOB)  # the read script is loaded; the tier serves
            assert acme in {m.organization_id for m in writer.get_memberships(ALICE)}  # in Redis, not in the app

            with proxy.holding():
                app.send(f"get {ALICE}")
                wait_until(lambda: proxy.held_bytes > 0, 10, what="Redis to answer the app's read")
                assert post(url, clerk.remove_membership(ALICE, acme)).status_code == 200
                # acknowledged, not waited out: the app dropped ALICE while its read's reply was still held
                assert metric(url, "clerk_org_cache_near_lapsed_total") == 0
            overtaken = app.reply()
            assert acme in overtaken["orgs"] and not overtaken["local"]  # the old value: its lookup began before

            assert not app.holds(ALICE)
            stats = app.stats()
            assert stats["acks"] == 1 and stats["refused"] == 1
            answer = app.get(ALICE)
            assert acme not in answer["orgs"] and not answer["local"]
    finally:
        proxy.close()


# -- the tier itself, in this process on a real Redis -------------------------------------------------


def test_the_tier_is_bounded_and_evicts_the_least_recently_used(redis: Redis, redis_server: RedisServer) -> None:
    near = NearCache(redis_server.url, size=2, lease_ms=LEASE_MS)
    try:
        assert near.wait_serving(10)
        far = clock() + 3600
        for user_id in ("user_a1", "user_b1"):
            ticket = near.ticket()
            assert ticket is not None and near.keep(user_id, [], far, ticket)
        assert near.get("user_a1") == []  # touched: user_b1 is now the least recently used
        ticket = near.ticket()
        assert ticket is not None and near.keep("user_c1", [], far, ticket)
        assert len(near) == 2 and near.get("user_b1") is None and near.get("user_a1") == []
    finally:
        near.close()


def test_a_ticket_taken_before_an_invalidation_keeps_nothing(redis: Redis, redis_server: RedisServer) -> None:
    """The epoch rule at the API (the process test above shows it through a real slow reply)."""
    from cache.io import SyncIO
    from cache.protocol import drop_user, near_invalidate_program

    near = NearCache(redis_server.url, size=10, lease_ms=LEASE_MS)
    try:
        assert near.wait_serving(10)
        ticket = near.ticket()
        assert ticket is not None
        outcome = SyncIO(redis).run(near_invalidate_program([drop_user(BOB)]))
        assert outcome.acked == 1
        assert not near.keep(ALICE, [], clock() + 60, ticket)  # another user's drop: still refused
        assert near.get(ALICE) is None
    finally:
        near.close()


def test_a_failed_renewal_empties_the_tier_and_nothing_is_kept_until_it_registers_again(
    own_redis: RedisServer,
) -> None:
    near = NearCache(own_redis.url, size=10, lease_ms=500)
    try:
        assert near.wait_serving(10)
        ticket = near.ticket()
        assert ticket is not None and near.keep(ALICE, [], clock() + 60, ticket)
        own_redis.stop()
        wait_until(lambda: not near.serving, 10, what="the near-cache to stop serving")
        assert near.get(ALICE) is None and len(near) == 0 and near.ticket() is None
        own_redis.start()
        assert near.wait_serving(10)
        assert near.get(ALICE) is None  # emptied, not resumed
    finally:
        near.close()


def test_when_redis_loses_the_registrations_the_intake_waits_out_every_lease_they_held(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    """A FLUSHALL (as a restart without persistence would) empties the registry while the app still serves
    ALICE under its lease: the intake, which saw the registry's stamp before, must not trust the empty
    list, but wait out the longest lease there may be before its 2xx."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    env = stack_env(redis_server.url, clerk, WEB_CONCURRENCY="1")  # the one intake worker saw the stamp
    url = f"http://127.0.0.1:{env['PORT']}"
    with procfile_process("web", env), apps(redis_server.url, clerk, "sync") as (app,):
        wait_until(lambda: _answers(url + "/healthz"), 60, what="gunicorn", poll_s=0.1)
        assert post(url, clerk.remove_membership(BOB, initech)).status_code == 200  # the intake sees the stamp
        assert acme in served_locally(app, ALICE)
        redis.flushall()
        orgs_with_member(clerk, ALICE, "Globex")  # so that the lookup below reads Clerk afresh, not Redis

        assert post(url, clerk.remove_membership(ALICE, acme)).status_code == 200

        answer = app.get(ALICE)
        assert acme not in answer["orgs"] and not answer["local"]
        assert app.stats()["drops"].get("renewal_refused")  # its lease ran out; Redis no longer knew it


def test_a_second_loss_of_the_registrations_is_seen_too(
    redis: Redis, redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    """The open case the model check found: the intake's invalidation after a first data loss finds no stamp;
    the app registers again (a stamp of its own); Redis loses its data again, and the next invalidation
    finds no stamp once more, as the last one did. Unless the intake stamped the data set itself the first
    time, it cannot tell, answers at once, and the app, which has not renewed yet, serves the revoked org
    from its tier. Its lease is 5 s here (a renewal every 1.25 s), so the window is wide."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    (hooli,) = orgs_with_member(clerk, BOB, "Hooli")
    env = stack_env(redis_server.url, clerk, WEB_CONCURRENCY="1")  # the one intake worker saw the stamp
    url = f"http://127.0.0.1:{env['PORT']}"
    with procfile_process("web", env), apps(redis_server.url, clerk, "sync", NEAR_CACHE_LEASE_MS="5000") as (app,):
        wait_until(lambda: _answers(url + "/healthz"), 60, what="gunicorn", poll_s=0.1)
        assert post(url, clerk.remove_membership(BOB, initech)).status_code == 200  # the intake sees the stamp
        redis.flushall()  # the first loss
        assert post(url, clerk.remove_membership(BOB, hooli)).status_code == 200  # waited: the stamp is gone
        wait_until(lambda: app.stats()["drops"].get("renewal_refused"), 20, what="the app to learn of the loss")
        app.wait_serving()  # registered again
        assert acme in served_locally(app, ALICE)
        redis.flushall()  # the second loss, before the app's next renewal
        orgs_with_member(clerk, ALICE, "Globex")  # so that the lookup below reads Clerk afresh, not Redis

        assert post(url, clerk.remove_membership(ALICE, acme)).status_code == 200

        answer = app.get(ALICE)
        assert acme not in answer["orgs"] and not answer["local"], answer


def test_after_a_sentinel_failover_the_app_registers_again_with_an_empty_tier_and_serves_nothing_stale(
    clerk: ClerkStandIn,
) -> None:
    """The primary is SIGKILLed while the app serves ALICE and BOB from memory: its subscription dies with
    the primary, so it empties its tier and registers again on the promoted replica (found through the
    sentinels). A revocation delivered through the failover (retried until a 2xx, as Svix does) is then
    seen by every lookup, and nothing from before the failover is served locally."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    with SentinelTopology(replicas=2, sentinels=3, failover_timeout_ms=2000) as topology:
        sentinels = ",".join(f"{host}:{port}" for host, port in topology.sentinels)
        sentinel_env = {"REDIS_SENTINELS": sentinels, "REDIS_SENTINEL_MASTER": topology.master_name}
        env = stack_env(topology.primary.url, clerk, **sentinel_env, REDIS_WAIT_TIMEOUT_MS="500")
        url = f"http://127.0.0.1:{env['PORT']}"
        with procfile_process("web", env), apps(topology.primary.url, clerk, "sync", **sentinel_env) as (app,):
            wait_until(lambda: _answers(url + "/healthz"), 60, what="gunicorn", poll_s=0.1)
            assert acme in served_locally(app, ALICE) and initech in served_locally(app, BOB)
            first_id = app.stats()["id"]

            old = topology.kill_primary()
            event = clerk.remove_membership(ALICE, acme)
            deadline = time.monotonic() + 60
            while True:  # Svix retries until a 2xx
                try:
                    if post(url, event).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, "the intake never answered 2xx through the failover"
                time.sleep(0.5)
            topology.wait_for_failover(old.port)

            assert acme not in app.get(ALICE)["orgs"]
            wait_until(lambda: app.stats()["registrations"] >= 2, 30, what="the app to register on the new primary")
            stats = app.stats()
            assert stats["id"] != first_id and stats["drops"], stats
            assert not app.holds(BOB)  # emptied, though no event named BOB
            assert not app.get(BOB)["local"]


def test_registrations_that_keep_failing_leave_no_subscription_open(own_redis: RedisServer) -> None:
    """Each registration subscribes first; one that fails before the listener thread took its subscription
    must close it itself, or every retry (5 a second, for as long as Redis refuses the registration: under
    Sentinel, while a replica holds acknowledgements) keeps a connection open. Here the scripts are refused
    (an ACL), so every registration fails at once; the code before this left about one in two open."""
    with own_redis.client() as default_user:
        default_user.execute_command("ACL", "SETUSER", "admin", "on", ">admin-pw", "~*", "&*", "+@all")
    admin = Redis(host="127.0.0.1", port=own_redis.port, username="admin", password="admin-pw")
    for command in ("-evalsha", "-eval", "-evalsha_ro", "-eval_ro", "-fcall", "-fcall_ro"):
        admin.execute_command("ACL", "SETUSER", "default", command)
    near = NearCache(own_redis.url, size=10, lease_ms=500)
    try:
        assert near.ticket() is None  # starts the threads; nothing is served
        wait_until(lambda: near.stats.drops.get("registration_failed", 0) >= 10, 20, what="10 failed registrations")
        listed = admin.execute_command("CLIENT", "LIST", "TYPE", "pubsub").decode().splitlines()
        assert len([line for line in listed if line]) <= 1, listed  # at most the one being tried now
        assert not near.serving
    finally:
        near.close()
        admin.close()
