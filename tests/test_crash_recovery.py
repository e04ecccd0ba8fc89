"""A worker SIGKILLed mid-job, then restarted: the work is finished and RQ is clean, in real time."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from cache import ClerkClient, MembershipCache
from cache.connections import cache_redis
from cache.contract import QUEUE_NAME
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import new_signing_secret, signed_event
from devstack.stack import REPO
from devstack.waiting import wait_until
from tests.conftest import CLERK_KEY, stack_env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO, env=env, stdout=log, stderr=log)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_a_worker_killed_mid_job_and_restarted_finishes_the_work_within_10_s(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """No clock, registry or TTL is moved: the dead job is found by its lapsed lease (2 s)."""
    from webhook import create_app

    secret = new_signing_secret()
    with ClerkStandIn(secret_key=CLERK_KEY) as clerk:
        acme = clerk.create_org("Acme")["data"]["id"]
        users = [f"user_2kill{i}" for i in range(3)]
        cache = MembershipCache(cache_redis(own_redis.url), ClerkClient(CLERK_KEY, clerk.url))
        for user_id in users:
            clerk.add_membership(user_id, acme)
            cache.get_memberships(user_id)
        env = stack_env(own_redis.url, clerk, secret)
        redis = Redis.from_url(own_redis.url, decode_responses=True)
        queue = Queue(QUEUE_NAME, connection=Redis.from_url(own_redis.url))
        client = create_app({"REDIS_URL": own_redis.url, "CLERK_WEBHOOK_SIGNING_SECRET": secret}).test_client()
        first = start_worker(env, tmp_path / "worker1.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            reads_before = {u: clerk.call_count(f"/v1/users/{u}/") for u in users}
            with clerk.hold(users[0]) as gate:
                for user_id in users:
                    body, headers = signed_event(secret, clerk.update_membership(user_id, acme, "org:admin"))
                    assert client.post("/webhooks/clerk", data=body, headers=headers).status_code == 200
                assert gate.wait_arrived(timeout=20)  # the job is mid-flight, its Clerk read held
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            assert StartedJobRegistry(queue=queue).count == 1  # RQ still thinks the dead job runs

            restarted = time.monotonic()
            second = start_worker(env, tmp_path / "worker2.log")
            wait_until(lambda: all("org:admin" in (redis.get(f"user-orgs:{u}") or "") for u in users), 10)
            finished_s = time.monotonic() - restarted

            def rq_is_clean() -> bool:
                counts = (queue.count, StartedJobRegistry(queue=queue).count, ScheduledJobRegistry(queue=queue).count)
                return counts == (0, 0, 0)

            wait_until(rq_is_clean, 90, what="RQ to show no job left behind")
            clean_s = time.monotonic() - restarted
            assert FailedJobRegistry(queue=queue).count == 0
            extra_reads = {u: clerk.call_count(f"/v1/users/{u}/") - reads_before[u] for u in users}
            assert all(n <= 2 for n in extra_reads.values()), extra_reads  # the dead job's read, and one more
            print(
                f"re-warmed {finished_s:.1f} s after the restart; RQ clean after {clean_s:.1f} s; reads {extra_reads}"
            )
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(15)
            redis.close()
