"""The operator CLI, run as a real process against the test Redis and the Clerk stand-in."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from redis import Redis

from cache import MembershipCache
from cache.contract import user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer, free_port
from devstack.signing import new_signing_secret
from devstack.stack import LocalStack
from devstack.waiting import wait_until
from tests.support import (
    ALICE,
    BOB,
    SIGNING_SECRET,
    cached_member,
    failed_jobs,
    held_leases,
    job_queue,
    queued_jobs,
    run_module,
    service_env,
    stack_env,
    stored,
    work_burst,
)

COMMANDS = ["get", "invalidate", "invalidate-org", "warm", "stats", "requeue-failed", "doctor", "send-test-event"]


def cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_module("clerk_org_cache_cli", *args, env={**os.environ, **(env or {})}, stdin=stdin)


@pytest.fixture
def env(redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn) -> dict[str, str]:
    return service_env(redis_server.url, clerk.url)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0 and "usage: clerk-org-cache " + command in result.stdout


def test_get_shows_the_cache_next_to_clerk(env: dict[str, str], cache: MembershipCache, clerk: ClerkStandIn) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    clerk.add_membership(ALICE, acme, "org:admin")
    assert "agree: not cached" in cli("get", ALICE, env=env).stdout
    cache.get_memberships(ALICE)
    result = cli("get", ALICE, env=env)
    assert result.returncode == 0 and "agree: yes" in result.stdout
    shown, _ = json.JSONDecoder().raw_decode(result.stdout)  # the cache's side, first of the two objects
    assert 290 <= shown["ttl_seconds"] <= 300  # a second may pass between the fill and the CLI's read
    clerk.update_membership(ALICE, acme, "org:member")  # no webhook: the cache is now behind
    assert "agree: NO" in cli("get", ALICE, env=env).stdout


def test_invalidate_and_invalidate_org(
    env: dict[str, str], cache: MembershipCache, clerk: ClerkStandIn, redis: Redis
) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    for user_id in (ALICE, BOB):
        clerk.add_membership(user_id, acme)
        cache.get_memberships(user_id)
    result = cli("invalidate", ALICE, env=env)
    assert result.returncode == 0 and "invalidated 1" in result.stdout
    assert redis.exists(user_orgs_key(ALICE)) == 0 and redis.exists(user_orgs_key(BOB)) == 1
    result = cli("invalidate-org", acme, env=env)
    assert result.returncode == 0 and "invalidated 1" in result.stdout
    assert redis.exists(user_orgs_key(BOB)) == 0
    assert queued_jobs(redis) == 1


def test_warm_from_stdin(env: dict[str, str], clerk: ClerkStandIn, redis: Redis) -> None:
    acme = clerk.create_org("Acme")["data"]["id"]
    users = [f"user_2warm{i}" for i in range(5)]
    for user_id in users:
        clerk.add_membership(user_id, acme)
    result = cli("warm", env=env, stdin="\n".join(users) + "\n")
    assert result.returncode == 0 and "warmed 5/5 (0 failed)" in result.stderr
    assert redis.exists(*[user_orgs_key(u) for u in users]) == 5


def test_warm_failure_exits_non_zero_with_one_line(env: dict[str, str], clerk: ClerkStandIn) -> None:
    clerk.fail_next(100, status=503)
    result = cli("warm", ALICE, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "clerk-org-cache warm: 1 of 1 user(s) could not be read from Clerk"
    )


def test_warm_with_a_user_named_twice_works_and_leaves_no_lease(
    redis_server: RedisServer, cache: MembershipCache, redis: Redis, clerk: ClerkStandIn
) -> None:
    """Found: `warm user_x user_x` crashed after taking the leases, voiding fills in flight for 15 s."""
    cached_member(clerk, cache, ALICE)
    redis.delete(user_orgs_key(ALICE))
    env = {**os.environ, **service_env(redis_server.url, clerk.url)}
    result = run_module("clerk_org_cache_cli", "warm", ALICE, ALICE, env=env)
    assert result.returncode == 0, result.stderr
    assert stored(redis, ALICE) is not None and held_leases(redis) == []
    clerk.fail_next(100, status=503)
    redis.delete(user_orgs_key(ALICE))
    failed = run_module("clerk_org_cache_cli", "warm", ALICE, ALICE, env=env)
    assert failed.returncode == 1
    assert held_leases(redis) == []  # given back on the error path too


def test_stats_and_requeue_failed(env: dict[str, str], redis_server: RedisServer, redis: Redis) -> None:
    connection = Redis.from_url(redis_server.url)
    job_queue(connection).enqueue_call("builtins.int", args=("not a number",))
    assert work_burst(redis_server.url).failed == 1
    stats = cli("stats", env=env).stdout
    assert '"failed_jobs": 1' in stats and '"limit_per_window": 800' in stats  # the Clerk budget line
    result = cli("requeue-failed", env=env)
    assert result.returncode == 0 and "requeued 1" in result.stdout
    assert failed_jobs(connection) == 0 and queued_jobs(connection) == 1
    unreachable = cli("stats", "--metrics-url", f"http://127.0.0.1:{free_port()}/metrics", env=env)
    assert unreachable.returncode == 1 and len(unreachable.stderr.strip().splitlines()) == 1


def test_doctor_passes_on_a_healthy_stack(env: dict[str, str], worker_process: Any) -> None:
    wait_until(lambda: "ok    worker" in cli("doctor", env=env).stdout, 20)
    result = cli("doctor", env=env)
    assert result.returncode == 0, result.stdout
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize(
    ("override", "check", "words"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:{free}/0"}, "redis", "REDIS_URL"),
        ({"CLERK_SECRET_KEY": "sk_test_wrong"}, "clerk", "CLERK_SECRET_KEY"),
        ({"CLERK_WEBHOOK_SIGNING_SECRET": "whsec_not*base64"}, "signing secrets", "CLERK_WEBHOOK_SIGNING_SECRET"),
    ],
)
def test_doctor_pinpoints_what_is_wrong(env: dict[str, str], override: dict[str, str], check: str, words: str) -> None:
    broken = {**env, **{k: v.format(free=free_port()) for k, v in override.items()}}
    result = cli("doctor", env=broken)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"FAIL  {check}:"))
    assert words in line
    assert "sk_test_wrong" not in result.stdout and "not*base64" not in result.stdout


def test_send_test_event_reaches_a_deployment(redis_server: RedisServer, redis: Redis, clerk: ClerkStandIn) -> None:
    secret = new_signing_secret()
    with LocalStack(stack_env(redis_server.url, clerk, secret)) as stack:
        good = cli("send-test-event", stack.url + "/webhooks/clerk", env={"CLERK_WEBHOOK_SIGNING_SECRET": secret})
        assert good.returncode == 0 and good.stdout.startswith('200 {"status":"processed"}')
        wrong = cli(
            "send-test-event", stack.url + "/webhooks/clerk", env={"CLERK_WEBHOOK_SIGNING_SECRET": SIGNING_SECRET}
        )
        assert wrong.returncode == 1 and wrong.stdout.startswith("401")
        assert wrong.stderr.strip() == "clerk-org-cache send-test-event: the deployment answered 401"


def test_bad_input_is_one_line_and_non_zero(env: dict[str, str]) -> None:
    result = cli("get", "not-a-user", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "clerk-org-cache get: not a Clerk user id (expected user_ followed by letters and digits)"
    ]


def test_invalidate_org_repairs_a_role_that_drifted(
    env: dict[str, str], cache: MembershipCache, clerk: ClerkStandIn, redis: Redis, run_worker: Any
) -> None:
    acme = cached_member(clerk, cache, ALICE, "org:admin")
    clerk.update_membership(ALICE, acme, "org:member")  # a webhook that never arrived
    assert cli("invalidate-org", acme, env=env).returncode == 0
    run_worker()
    assert [m.role for m in cache.get_memberships(ALICE)] == ["org:member"]
