"""The Procfile's real processes (gunicorn web, RQ worker) under honcho, and their start-up checks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from redis import Redis
from rq import Worker

from cache.connections import INTAKE_TIMEOUT_S
from cache.contract import user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import new_signing_secret, signed_event
from devstack.stack import LocalStack, descendants
from devstack.waiting import wait_until
from tests.support import (
    ALICE,
    BOB,
    SIGNING_SECRET,
    bare_env,
    make_cache,
    orgs_with_member,
    procfile_process,
    run_module,
    stack_env,
    stored,
)


@pytest.mark.parametrize(
    ("module", "env", "variable"),
    [
        ("worker", {}, "CLERK_SECRET_KEY"),
        ("worker", {"CLERK_SECRET_KEY": "sk_test_x", "USER_ORGS_TTL_SECONDS": "soon"}, "USER_ORGS_TTL_SECONDS"),
        ("worker", {"CLERK_SECRET_KEY": "sk_test_x", "REDIS_URL": "http://x"}, "REDIS_URL"),
        ("worker", {"CLERK_SECRET_KEY": "sk_test_x", "CLERK_API_URL": "ftp://x"}, "CLERK_API_URL"),
        ("worker", {"CLERK_SECRET_KEY": "sk_test_x", "REFRESH_RETRY_INTERVALS": "soon"}, "REFRESH_RETRY_INTERVALS"),
        ("webhook", {}, "CLERK_WEBHOOK_SIGNING_SECRET"),
        ("webhook", {"CLERK_WEBHOOK_SIGNING_SECRET": "whsec_not*base64"}, "CLERK_WEBHOOK_SIGNING_SECRET"),
        ("webhook", {"CLERK_WEBHOOK_SIGNING_SECRET": "secret_without_prefix"}, "CLERK_WEBHOOK_SIGNING_SECRET"),
        ("webhook", {"CLERK_WEBHOOK_SIGNING_SECRET": new_signing_secret(), "PORT": "http"}, "PORT"),
    ],
)
def test_a_process_missing_configuration_exits_with_one_line_naming_it(
    module: str, env: dict[str, str], variable: str
) -> None:
    result = run_module(module, env=bare_env(**env), timeout_s=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    for value in env.values():
        if value.startswith(("whsec_", "secret_", "sk_")):
            assert value not in result.stderr  # secrets are never echoed


def test_procfile_stack_processes_events_and_survives_a_redis_outage(
    own_redis: RedisServer, clerk: ClerkStandIn, tmp_path: Path
) -> None:
    """This test stops and restarts Redis, so it runs on a server of its own.

    Redis stops while the worker's job is mid-way (its Clerk read held), so RQ's worker quits on the
    Redis error; after Redis returns, the same worker process must start a new one and re-warm."""
    secret = new_signing_secret()
    acme, globex = orgs_with_member(clerk, ALICE, "Acme", "Globex")
    (initech,) = orgs_with_member(clerk, BOB, "Initech")
    env = stack_env(own_redis.url, clerk, secret)
    cache = make_cache(own_redis.url, clerk.url)
    redis = Redis.from_url(own_redis.url, decode_responses=True)
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as log, LocalStack(env, log=log) as stack:

        def post(event: dict[str, object]) -> requests.Response:
            body, headers = signed_event(secret, event)
            return requests.post(stack.url + "/webhooks/clerk", data=body, headers=headers, timeout=15)

        assert requests.get(stack.url + "/healthz", timeout=5).status_code == 200
        assert requests.get(stack.url + "/readyz", timeout=5).status_code == 200
        assert len(cache.get_memberships(ALICE)) == 2

        response = post(clerk.remove_membership(ALICE, acme))
        assert response.status_code == 200 and response.json() == {"status": "processed"}
        assert redis.exists(user_orgs_key(ALICE)) == 0
        deadline = time.monotonic() + 15
        while not redis.exists(user_orgs_key(ALICE)) and time.monotonic() < deadline:
            time.sleep(0.02)  # the worker process refreshes the key
        assert [m["organizationId"] for m in stored(redis, ALICE)] == [globex]
        (worker,) = Worker.all(connection=redis)  # the worker process, which must live through the outage

        cache.get_memberships(BOB)
        with clerk.hold(BOB) as gate:  # the worker's job is reading Clerk when Redis stops
            assert post(clerk.update_membership(BOB, initech, "org:admin")).status_code == 200
            assert gate.wait_arrived()
            own_redis.stop()
            started = time.perf_counter()
            response = post(clerk.add_membership(ALICE, acme))
            assert response.status_code == 503 and response.json()["error"] == "unavailable"
            assert time.perf_counter() - started < 2  # refused: no timeout runs out (a hang: see the next test)
            assert requests.get(stack.url + "/readyz", timeout=5).status_code == 503
            assert {m.organization_id for m in cache.get_memberships(ALICE)} == {acme, globex}  # from Clerk
        # the job's write fails, and so does RQ's record of the failure: RQ's worker quits
        wait_until(lambda: b"worker stopped after an error" in log_path.read_bytes(), 15, what="RQ's worker to quit")

        own_redis.start()  # empty, same port: the processes reconnect without a restart
        deadline = time.monotonic() + 10
        while requests.get(stack.url + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        wait_until(lambda: cache.get_memberships(ALICE) and redis.exists(user_orgs_key(ALICE)), 10, poll_s=0.1)
        assert post(clerk.update_membership(ALICE, acme, "org:admin")).status_code == 200
        assert redis.exists(user_orgs_key(ALICE)) == 0
        wait_until(lambda: redis.exists(user_orgs_key(ALICE)), 30, what="the worker to re-warm the key")
        assert {m["organizationId"]: m["role"] for m in stored(redis, ALICE)} == {
            acme: "org:admin",
            globex: "org:member",
        }
        assert worker.pid in descendants(stack.pid or 0)  # the same process did it: no restart
    redis.close()


def test_intake_answers_503_within_its_timeouts_when_redis_hangs(own_redis: RedisServer, clerk: ClerkStandIn) -> None:
    """A SIGSTOPped Redis still accepts connections (the kernel does), and never answers: only the intake
    client's timeouts end the wait. Each try of a command waits out the 4 s read timeout (above the
    longest WAIT), and there is one retry: 8 s, and 16 s if a second command waited too. 12 s tells
    those apart with 4 s to spare either way, and is inside Svix's 15 s, past which it gives up."""
    (acme,) = orgs_with_member(clerk, ALICE, "Acme")
    env = stack_env(own_redis.url, clerk, WEB_CONCURRENCY="1")  # one gunicorn worker: its connection is warm
    url = f"http://127.0.0.1:{env['PORT']}"

    def post(event: dict[str, object]) -> requests.Response:
        body, headers = signed_event(SIGNING_SECRET, event)
        return requests.post(url + "/webhooks/clerk", data=body, headers=headers, timeout=20)  # never hangs the test

    with procfile_process("web", env):
        wait_until(lambda: _answers(url + "/healthz"), 60, what="gunicorn", poll_s=0.1)
        assert post(clerk.update_membership(ALICE, acme, "org:admin")).status_code == 200
        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            response = post(clerk.remove_membership(ALICE, acme))
            elapsed = time.perf_counter() - started
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
    assert response.status_code == 503 and response.json()["error"] == "unavailable"
    assert INTAKE_TIMEOUT_S <= elapsed < 12, elapsed  # at least one read timed out: Redis did hang


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_a_role_change_is_revoked_for_a_thousand_holders_at_the_intakes_2xx_with_the_worker_stopped(
    redis_server: RedisServer, clerk: ClerkStandIn
) -> None:
    """The Procfile's web alone (no worker runs until the end): the 2xx of role.updated is the revocation.
    Then the Procfile's worker rewrites every holder's value from one read of Clerk's role list."""
    acme = clerk.create_org("Acme")["data"]["id"]
    holders = [f"user_2holder{i:05d}" for i in range(1000)]
    for user_id in holders:
        clerk.add_membership(user_id, acme, "org:billing")  # org:billing:read and org:billing:manage
    cache = make_cache(redis_server.url, clerk.url)
    for user_id in holders:
        cache.get_memberships(user_id)
    env = stack_env(redis_server.url, clerk)
    url = f"http://127.0.0.1:{env['PORT']}"
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    with procfile_process("web", env):
        wait_until(lambda: _answers(url + "/healthz"), 60, what="gunicorn", poll_s=0.1)
        body, headers = signed_event(SIGNING_SECRET, clerk.update_role("org:billing", permissions=["org:billing:read"]))
        response = requests.post(url + "/webhooks/clerk", data=body, headers=headers, timeout=15)
        assert response.status_code == 200 and response.json() == {"status": "processed"}

        for user_id in (holders[0], holders[499], holders[-1]):
            membership = cache.get_membership(user_id, acme)
            assert membership is not None and membership.permissions == ("org:billing:read",)
        assert redis.exists(*[user_orgs_key(u) for u in holders[1:499]]) == 0  # none of the rest is served stale
    clerk.reset_counts()
    with procfile_process("worker", env):
        wait_until(lambda: redis.exists(*[user_orgs_key(u) for u in holders]) == 1000, 60, what="the role patch")
    assert clerk.call_count("/v1/organization_roles") <= 2 and clerk.call_count("/v1/users/") == 0
    values = [stored(redis, u) for u in holders]
    assert all(v[0]["permissions"] == ["org:billing:read"] for v in values)
    redis.close()
