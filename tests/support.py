"""Test support in one place, shared by the tests (tests/conftest.py builds its fixtures on it)
and the benchmarks (bench/): plain functions and classes, no pytest.

- sample ids and the secrets the suite runs with;
- the cache under test (`make_cache`), Clerk seeded with members, concurrent lookups;
- the intake (`intake_client`, `post_event`) and the Procfile's processes (`stack_env`,
  `procfile_process`), run as the Procfile says;
- the RQ worker in this process until the queue is empty (`work_burst`);
- named reads of the cache's internal state (`pending_users`, `stash_exists`, `queued_jobs`...),
  built on `cache.contract`'s key names and RQ's own API, so that no test spells a key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from redis import Redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from cache import ClerkClient, Membership, MembershipCache, contract
from cache.connections import RedisTarget, cache_redis
from devstack.clerk_standin import SAMPLE_ORG_IDS, SAMPLE_USER_IDS, ClerkStandIn
from devstack.redis_server import free_port
from devstack.signing import new_signing_secret, signed_event
from devstack.stack import REPO, procfile_command
from devstack.waiting import wait_until

if TYPE_CHECKING:
    from flask.testing import FlaskClient

# -- sample ids and secrets -----------------------------------------------------------------

ALICE = SAMPLE_USER_IDS["alice"]
BOB = SAMPLE_USER_IDS["bob"]
ACME = SAMPLE_ORG_IDS["acme"]  # a well-formed org id, for events about an org Clerk need not know

SIGNING_SECRET = new_signing_secret()
CLERK_KEY = "sk_test_" + "k3y" * 10
METRICS_TOKEN = "metrics-" + "t0k" * 8
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def unreachable_redis_url() -> str:
    """A Redis URL on a free loopback port where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


# -- the cache under test, and Clerk ------------------------------------------------------------


def make_cache(
    redis_url: RedisTarget | str, clerk_url: str, *, clerk_key: str = CLERK_KEY, **clerk_options: Any
) -> MembershipCache:
    """The cache as app code builds it, on ``redis_url`` and the Clerk (stand-in) at ``clerk_url``."""
    return MembershipCache(cache_redis(redis_url), ClerkClient(clerk_key, clerk_url, **clerk_options))


def orgs_with_member(clerk: ClerkStandIn, user_id: str, *names: str, role: str = "org:member") -> list[str]:
    """New orgs in Clerk, one per name, each with ``user_id`` as a member; their ids."""
    org_ids = [clerk.create_org(name)["data"]["id"] for name in names]
    for org_id in org_ids:
        clerk.add_membership(user_id, org_id, role)
    return org_ids


class LooksUp(Protocol):
    """Anything that answers a lookup: `MembershipCache`, or a test's face over either API."""

    def get_memberships(self, user_id: str) -> list[Membership]: ...


def cached_member(
    clerk: ClerkStandIn, cache: LooksUp, user_id: str, role: str = "org:member", org_name: str = "Acme"
) -> str:
    """A new org in Clerk with ``user_id`` as a member, looked up once so the cache holds it; the org id."""
    (org_id,) = orgs_with_member(clerk, user_id, org_name, role=role)
    cache.get_memberships(user_id)
    return org_id


def concurrent_lookups(cache: MembershipCache, user_id: str, lookups: int = 50) -> list[list[Membership]]:
    """``lookups`` threads looking ``user_id`` up at the same instant (a barrier releases them); their answers."""
    barrier = threading.Barrier(lookups)
    results: list[list[Membership]] = []

    def lookup() -> None:
        barrier.wait()
        results.append(cache.get_memberships(user_id))

    threads = [threading.Thread(target=lookup) for _ in range(lookups)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# -- the intake ---------------------------------------------------------------------------------


def intake_client(redis_url: str, *, secret: str = SIGNING_SECRET, **config: str) -> FlaskClient:
    """A test client of the webhook intake on ``redis_url``, verifying with ``secret``."""
    from webhook import create_app  # only tests need Flask's app; the benchmarks run the real web process

    return create_app({"REDIS_URL": redis_url, "CLERK_WEBHOOK_SIGNING_SECRET": secret, **config}).test_client()


def post_event(client: FlaskClient, event: dict[str, Any], *, secret: str = SIGNING_SECRET, **kw: Any) -> Any:
    """Deliver ``event`` signed as Svix does (``kw``: msg_id, timestamp)."""
    body, headers = signed_event(secret, event, **kw)
    return client.post("/webhooks/clerk", data=body, headers=headers)


# -- the Procfile's processes -------------------------------------------------------------------


def near_app_env(redis_url: str, clerk: ClerkStandIn, lease_ms: int, **extra: str) -> dict[str, str]:
    """The environment of a `tests.near_app` process: this checkout, a Redis, the stand-in, a near-cache."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "REDIS_URL": redis_url,
        "CLERK_SECRET_KEY": CLERK_KEY,
        "CLERK_API_URL": clerk.url,
        "NEAR_CACHE_SIZE": "1000",
        "NEAR_CACHE_LEASE_MS": str(lease_ms),
        **extra,
    }


def service_env(redis_url: str, clerk_url: str, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """The variables that point a process (web, worker, CLI) at a Redis, a Clerk and a signing secret."""
    return {
        "REDIS_URL": redis_url,
        "CLERK_SECRET_KEY": CLERK_KEY,
        "CLERK_API_URL": clerk_url,
        "CLERK_WEBHOOK_SIGNING_SECRET": secret,
    }


def stack_env(redis_url: str, clerk: ClerkStandIn, secret: str = SIGNING_SECRET, **extra: str) -> dict[str, str]:
    """The environment for the Procfile's processes, pointed at a private Redis and the Clerk stand-in."""
    env = {
        **os.environ,
        **service_env(redis_url, clerk.url, secret),
        "METRICS_TOKEN": METRICS_TOKEN,
        "PORT": str(free_port()),
        **extra,
    }
    for inherited in ("PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT"):
        if inherited not in extra:
            env.pop(inherited, None)
    return env


def bare_env(**variables: str) -> dict[str, str]:
    """PATH and PYTHONPATH (the repo) and ``variables`` only: a process reads nothing the test did not give it."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **variables}


def run_module(
    module: str, *args: str, env: Mapping[str, str], stdin: str | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repo with exactly ``env``, to completion, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def start_process(
    process: str, env: Mapping[str, str], log: IO[bytes] | int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """One of the Procfile's processes, started as a host would, its output to ``log``."""
    return subprocess.Popen(procfile_command(process), cwd=REPO, env=dict(env), stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, and fail if it has not exited within ``timeout_s`` (killing it, so nothing is left behind)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args!r} did not exit within {timeout_s:g} s of SIGTERM") from None


@contextmanager
def procfile_process(
    process: str, env: Mapping[str, str], log: IO[bytes] | int = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """`start_process`, stopped on leaving the block (if it still runs)."""
    running = start_process(process, env, log)
    try:
        yield running
    finally:
        stop_process(running)


# -- the worker in this process -----------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    queued: int  # jobs in the queue when the worker started
    failed: int  # jobs in RQ's failed registry when it stopped


def work_burst(redis_url: str, *, with_scheduler: bool = False) -> Burst:
    """Run the real RQ worker in this process until the queue is empty (burst mode).

    Jobs run with whatever `worker.jobs.use_refresher` installed (the ``cache`` fixture does).
    """
    connection = Redis.from_url(redis_url)
    try:
        queue = job_queue(connection)
        queued = queue.count
        SimpleWorker([queue], connection=connection).work(burst=True, with_scheduler=with_scheduler)
        return Burst(queued=queued, failed=failed_jobs(connection))
    finally:
        connection.close()


# -- named reads (and a few writes) of internal state ---------------------------------------------


def _texts(values: Any) -> list[str]:
    return sorted(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def job_queue(redis: Redis) -> Queue:
    """RQ's queue of refresh jobs."""
    return Queue(contract.QUEUE_NAME, connection=redis)


def queued_jobs(redis: Redis) -> int:
    return job_queue(redis).count


def scheduled_jobs(redis: Redis) -> int:
    """Jobs waiting for a retry."""
    return int(ScheduledJobRegistry(queue=job_queue(redis)).count)  # type: ignore[no-untyped-call]


def started_jobs(redis: Redis) -> int:
    return int(StartedJobRegistry(queue=job_queue(redis)).count)


def failed_jobs(redis: Redis) -> int:
    return int(FailedJobRegistry(queue=job_queue(redis)).count)


def drop_queued_jobs(redis: Redis) -> None:
    """Empty the queue behind RQ's back, as a lost enqueue would leave it."""
    redis.delete(job_queue(redis).key)


def clear_drain_marker(redis: Redis) -> None:
    """Forget that a drain job was scheduled, as if its enqueue never happened."""
    redis.delete(contract.DRAIN_SCHEDULED_KEY)


def pending_users(redis: Redis) -> set[str]:
    """Users waiting for a refresh."""
    return set(_texts(redis.smembers(contract.PENDING_REFRESH_KEY)))


def refreshing_users(redis: Redis) -> set[str]:
    """Users any drain job has taken and not finished."""
    jobs = _texts(redis.smembers(contract.DRAINS_KEY))
    return {user for job in jobs for user in _texts(redis.smembers(contract.refreshing_key(job)))}


def stash_exists(redis: Redis, user_id: str) -> bool:
    """Whether an org event moved the user's value aside for a patch."""
    return bool(redis.exists(contract.stash_key(user_id)))


def stashed_users(redis: Redis) -> list[str]:
    return [key.removeprefix(contract.STASH_PREFIX) for key in _texts(redis.keys(contract.STASH_PREFIX + "*"))]


def orgs_awaiting_patch(redis: Redis) -> set[str]:
    """The org patches still listed (``kind:org id``)."""
    return set(_texts(redis.smembers(contract.ORG_PATCHES_KEY)))


def org_patch_keys(redis: Redis) -> list[str]:
    """Every key of the org-patch bookkeeping: the list of orgs to patch and each org's members."""
    keys = _texts(redis.keys(contract.ORG_PATCH_PREFIX + "*"))
    return keys + [contract.ORG_PATCHES_KEY] * int(redis.exists(contract.ORG_PATCHES_KEY))


def indexed_members(redis: Redis, org_id: str) -> set[str]:
    """The org's members as the cache's org index lists them."""
    return set(_texts(redis.smembers(contract.org_index_key(org_id))))


def lease_held(redis: Redis, user_id: str) -> bool:
    return bool(redis.exists(contract.lease_key(user_id)))


def held_leases(redis: Redis) -> list[str]:
    """Users with a fill lease out."""
    return [key.removeprefix(contract.LEASE_PREFIX) for key in _texts(redis.keys(contract.LEASE_PREFIX + "*"))]


def cached_users(redis: Redis) -> list[str]:
    """Users with a stored value."""
    return [key.removeprefix(contract.USER_ORGS_PREFIX) for key in _texts(redis.keys(contract.USER_ORGS_PREFIX + "*"))]


def stored(redis: Redis, user_id: str) -> Any:
    """The user's stored value as parsed JSON (the contract's array), or None when nothing is stored."""
    raw = redis.get(contract.user_orgs_key(user_id))
    return None if raw is None else json.loads(raw)


def wait_until_drained(redis: Redis, timeout_s: float = 60.0) -> None:
    """Until the worker has emptied the queue and the pending set and finished its job."""
    wait_until(
        lambda: not (queued_jobs(redis) or pending_users(redis) or started_jobs(redis)),
        timeout_s,
        what="the worker to drain",
    )
