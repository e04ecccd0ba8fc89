"""A worker SIGKILLed mid-job, then restarted: the work is finished and RQ is clean, in real time."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from redis import Redis

from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.waiting import wait_until
from tests.support import (
    failed_jobs,
    intake_client,
    make_cache,
    post_event,
    queued_jobs,
    scheduled_jobs,
    stack_env,
    start_process,
    started_jobs,
    stop_process,
)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return start_process("worker", env, log)


def test_a_worker_killed_mid_job_and_restarted_finishes_the_work_within_10_s(
    own_redis: RedisServer, clerk: ClerkStandIn, tmp_path: Path
) -> None:
    """No clock, registry or TTL is moved: the dead job is found by its lapsed lease (2 s)."""
    acme = clerk.create_org("Acme")["data"]["id"]
    users = [f"user_2kill{i}" for i in range(3)]
    cache = make_cache(own_redis.url, clerk.url)
    for user_id in users:
        clerk.add_membership(user_id, acme)
        cache.get_memberships(user_id)
    env = stack_env(own_redis.url, clerk)
    redis = Redis.from_url(own_redis.url, decode_responses=True)
    client = intake_client(own_redis.url)
    first = start_worker(env, tmp_path / "worker1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        reads_before = {u: clerk.call_count(f"/v1/users/{u}/") for u in users}
        with clerk.hold(users[0]) as gate:
            for user_id in users:
                assert post_event(client, clerk.update_membership(user_id, acme, "org:admin")).status_code == 200
            assert gate.wait_arrived(timeout=20)  # the job is mid-flight, its Clerk read held
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert started_jobs(redis) == 1  # RQ still thinks the dead job runs

        restarted = time.monotonic()
        second = start_worker(env, tmp_path / "worker2.log")
        wait_until(lambda: all("org:admin" in (redis.get(f"user-orgs:{u}") or "") for u in users), 10)
        finished_s = time.monotonic() - restarted

        def rq_is_clean() -> bool:
            return (queued_jobs(redis), started_jobs(redis), scheduled_jobs(redis)) == (0, 0, 0)

        wait_until(rq_is_clean, 90, what="RQ to show no job left behind")
        clean_s = time.monotonic() - restarted
        assert failed_jobs(redis) == 0
        extra_reads = {u: clerk.call_count(f"/v1/users/{u}/") - reads_before[u] for u in users}
        assert all(n <= 2 for n in extra_reads.values()), extra_reads  # the dead job's read, and one more
        print(f"re-warmed {finished_s:.1f} s after the restart; RQ clean after {clean_s:.1f} s; reads {extra_reads}")
    finally:
        for process in (first, second):
            if process is not None:
                stop_process(process)
        redis.close()
