"""``clerk-org-cache``: the operator's command line, in the spirit of ``rq info``.

Reads the same environment as the service (REDIS_URL, CLERK_SECRET_KEY, CLERK_API_URL,
CLERK_WEBHOOK_SIGNING_SECRET). Every command has ``--help``; a failure exits non-zero
with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from cache.budget import BudgetPolicy, ClerkBudget
from cache.clerk import ClerkClient
from cache.config import Settings
from cache.connections import RedisTarget, Role, redis_client
from cache.contract import (
    ORG_PATCHES_KEY,
    PENDING_REFRESH_KEY,
    QUEUE_NAME,
    CorruptValue,
    Membership,
    check_org_id,
    check_user_id,
    decode_memberships,
    membership_from_clerk,
    user_orgs_key,
)
from cache.durability import ReplicaWait, WaitPolicy
from cache.errors import ClerkAuthError, ClerkCacheError, ClerkNotFound, ClerkUnavailable, ConfigError
from cache.io import SyncIO
from cache.protocol import Target, near_invalidate_program, record_program, refresh_user, reread_org_members
from service.redis_checks import ChecksUnavailable, risky_settings
from worker.queue import enqueue_drain, refresh_queue
from worker.refresher import Refresher


class CommandFailed(ClerkCacheError):
    """A command could not do its job; the message is the one line printed."""


def _settings(need_clerk_key: bool = True) -> Settings:
    settings = Settings.from_env(process="cli")
    if need_clerk_key and not settings.clerk_secret_key:
        raise ConfigError("CLERK_SECRET_KEY", "is not set (the Clerk Backend API secret key, sk_live_... or sk_test_)")
    return settings


def _signing_secrets() -> tuple[str, ...]:
    found = Settings.from_env(process="cli").webhook_signing_secrets
    if not found:
        raise ConfigError("CLERK_WEBHOOK_SIGNING_SECRET", "is not set (one or more whsec_... secrets, space-separated)")
    return found


def _redis(settings: Settings) -> Redis:
    return redis_client(RedisTarget.from_settings(settings), Role.TOOL)


def _view(memberships: Iterable[Membership]) -> list[dict[str, str | list[str] | None]]:
    return sorted((m.to_json_dict() for m in memberships), key=lambda m: str(m["organizationId"]))


# -- commands ---------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace) -> int:
    settings = _settings()
    user_id = check_user_id(args.user_id)
    redis = _redis(settings)
    raw, ttl = redis.get(user_orgs_key(user_id)), redis.ttl(user_orgs_key(user_id))
    clerk = ClerkClient(settings.clerk_secret_key, settings.clerk_api_url)
    try:
        truth = _view(membership_from_clerk(m) for m in clerk.list_user_memberships(user_id))
    except ClerkNotFound:
        truth = []
    if raw is None:
        cached: Any = None
        agree = "not cached"
    else:
        try:
            cached = _view(decode_memberships(raw))
            agree = "yes" if cached == truth else "NO"
        except CorruptValue:
            cached = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            agree = "NO (the cached value breaks the contract)"
    print(json.dumps({"user_id": user_id, "cached": cached, "ttl_seconds": ttl if raw else None}, indent=2))
    print(json.dumps({"clerk": truth}, indent=2))
    print(f"agree: {agree}")
    return 0


def _record(targets: Sequence[Target]) -> int:
    settings = _settings(need_clerk_key=False)
    redis = _redis(settings)
    io = SyncIO(redis)
    recorded = io.run(record_program(targets, durable=ReplicaWait(WaitPolicy.from_settings(settings))))
    if recorded.schedule_drain:
        enqueue_drain(refresh_queue(redis), settings.refresh_retry_intervals)
    io.run(near_invalidate_program(targets, block_s=1.0))  # every app's near-cache dropped them, or its lease ran out
    print(f"invalidated {recorded.invalidated} cached value(s); the worker re-warms them")
    return 0


def cmd_invalidate(args: argparse.Namespace) -> int:
    return _record([refresh_user(args.user_id)])


def cmd_invalidate_org(args: argparse.Namespace) -> int:
    check_org_id(args.org_id)
    return _record([reread_org_members(args.org_id)])


def cmd_warm(args: argparse.Namespace) -> int:
    settings = _settings()
    user_ids = [check_user_id(u) for u in (args.user_ids or (line.strip() for line in sys.stdin)) if u]
    refresher = Refresher.from_settings(settings)  # warm draws from the re-warm share of the Clerk budget
    interval = 1.0 / args.rate
    done = failed = 0
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for start in range(0, len(user_ids), args.concurrency):
            batch = user_ids[start : start + args.concurrency]
            began = time.monotonic()
            for outcome in refresher.refresh_many(batch, pool).values():
                failed += isinstance(outcome, Exception)
            done += len(batch)
            print(f"\rwarmed {done}/{len(user_ids)} ({failed} failed)", end="", file=sys.stderr, flush=True)
            time.sleep(max(0.0, len(batch) * interval - (time.monotonic() - began)))  # stay under --rate
    print(file=sys.stderr)
    if failed:
        raise CommandFailed(f"{failed} of {len(user_ids)} user(s) could not be read from Clerk")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    settings = _settings(need_clerk_key=False)
    redis = _redis(settings)
    queue = Queue(QUEUE_NAME, connection=redis)
    out: dict[str, Any] = {
        "queued_jobs": queue.count,
        "failed_jobs": FailedJobRegistry(queue=queue).count,
        "users_waiting_for_refresh": redis.scard(PENDING_REFRESH_KEY),
        "org_patches_waiting": redis.scard(ORG_PATCHES_KEY),
        "workers": Worker.count(queue=queue),
        "clerk_budget": ClerkBudget(redis, BudgetPolicy.from_settings(settings)).usage(),
    }
    totals: dict[str, float] = {}
    for url in args.metrics_url:
        try:
            auth = {"Authorization": f"Bearer {settings.metrics_token}"} if settings.metrics_token else {}
            text = requests.get(url, headers=auth, timeout=5).text
        except requests.RequestException as exc:
            raise CommandFailed(f"{url}: {type(exc).__name__}") from None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = sample.name + json.dumps(sample.labels, sort_keys=True)
                    totals[key] = totals.get(key, 0.0) + sample.value
    if totals:
        hits = sum(v for k, v in totals.items() if k.startswith('clerk_org_cache_lookups_total{"result": "hit"'))
        lookups = sum(v for k, v in totals.items() if k.startswith("clerk_org_cache_lookups_total"))
        out["hit_ratio"] = round(hits / lookups, 4) if lookups else None
        out["counters"] = dict(sorted(totals.items()))
    print(json.dumps(out, indent=2))
    return 0


def cmd_requeue_failed(args: argparse.Namespace) -> int:
    settings = _settings(need_clerk_key=False)
    registry = FailedJobRegistry(queue=Queue(QUEUE_NAME, connection=_redis(settings)))
    job_ids = registry.get_job_ids()
    for job_id in job_ids:
        registry.requeue(job_id)
    print(f"requeued {len(job_ids)} failed job(s)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    problems = 0

    def check(name: str, run: Callable[[], str]) -> None:
        nonlocal problems
        try:
            print(f"ok    {name}: {run()}")
        except (ClerkCacheError, RedisError, requests.RequestException) as exc:
            problems += 1
            print(f"FAIL  {name}: {exc}")

    try:  # the signing secrets get a check of their own below
        env = {k: v for k, v in os.environ.items() if k != "CLERK_WEBHOOK_SIGNING_SECRET"}
        settings = Settings.from_env(env, process="cli")
    except ConfigError as exc:
        print(f"FAIL  configuration: {exc}")
        return 1
    redis = _redis(settings)

    def redis_check() -> str:
        try:
            version = str(redis.info("server")["redis_version"])
        except RedisError as exc:
            raise CommandFailed(
                f"nothing answers at REDIS_URL ({type(exc).__name__}): start Redis or fix REDIS_URL"
            ) from None
        if tuple(int(p) for p in version.split(".")[:2]) < (7, 0):
            raise CommandFailed(f"Redis {version} is too old: 7.0 or newer is required")
        try:
            warnings = risky_settings(redis)
        except ChecksUnavailable:
            warnings = ["settings not checked (CONFIG GET is not allowed)"]
        return f"Redis {version}" + ("; " + "; ".join(warnings) if warnings else "")

    def clerk_check() -> str:
        if not settings.clerk_secret_key:
            raise CommandFailed("CLERK_SECRET_KEY is not set: copy the secret key from Clerk's dashboard (API keys)")
        clerk = ClerkClient(settings.clerk_secret_key, settings.clerk_api_url, max_attempts=1)
        try:
            clerk.list_user_memberships("user_doctor" + secrets.token_hex(4))
        except ClerkNotFound:
            pass
        except ClerkAuthError:
            raise CommandFailed(
                "Clerk rejects CLERK_SECRET_KEY (401/403): use the secret key (sk_...) of this instance"
            ) from None
        except ClerkUnavailable as exc:
            raise CommandFailed(f"Clerk unreachable at CLERK_API_URL={settings.clerk_api_url}: {exc}") from None
        return f"Clerk accepts the key at {settings.clerk_api_url}"

    def secrets_check() -> str:
        try:
            found = _signing_secrets()
        except ConfigError as exc:
            raise CommandFailed(f"{exc}: copy the signing secret from Clerk's dashboard (Webhooks)") from None
        return f"{len(found)} well-formed whsec_ secret(s)"

    def worker_check() -> str:
        workers = Worker.count(queue=Queue(QUEUE_NAME, connection=redis))
        if not workers:
            raise CommandFailed("no worker is listening on the queue: run the Procfile's worker process")
        return f"{workers} worker(s) listening"

    check("redis", redis_check)
    check("clerk", clerk_check)
    check("signing secrets", secrets_check)
    check("worker", worker_check)
    return 1 if problems else 0


def cmd_send_test_event(args: argparse.Namespace) -> int:
    from svix.webhooks import Webhook

    secrets_ = _signing_secrets()
    body = json.dumps(
        {
            "type": "organizationMembership.updated",
            "object": "event",
            "data": {
                "object": "organization_membership",
                "role": "org:member",
                "organization": {"object": "organization", "id": args.org_id, "name": "Test"},
                "public_user_data": {"user_id": args.user_id},
            },
        }
    )
    msg_id, now = "msg_" + secrets.token_hex(13), datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(secrets_[0]).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    try:
        response = requests.post(args.url, data=body, headers=headers, timeout=15)
    except requests.RequestException as exc:
        raise CommandFailed(f"{args.url}: {type(exc).__name__}") from None
    print(f"{response.status_code} {response.text.strip()}")
    if not response.ok:
        raise CommandFailed(f"the deployment answered {response.status_code}")
    return 0


# -- wiring -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="clerk-org-cache", description="Inspect and operate the Clerk membership cache (reads the service's env)."
    )
    sub = top.add_subparsers(dest="command", required=True)

    def add(name: str, run: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(run=run)
        return p

    add("get", cmd_get, "show what the cache holds for a user next to what Clerk says").add_argument("user_id")
    add("invalidate", cmd_invalidate, "drop a user's cached value now (the worker re-warms it)").add_argument("user_id")
    add("invalidate-org", cmd_invalidate_org, "drop every cached member of an org (re-read from Clerk)").add_argument(
        "org_id"
    )
    warm = add("warm", cmd_warm, "fill the cache for user ids given as arguments or one per line on stdin")
    warm.add_argument("user_ids", nargs="*")
    warm.add_argument("--rate", type=float, default=80.0, help="Clerk calls per second at most (default 80)")
    warm.add_argument("--concurrency", type=int, default=8, help="Clerk calls in parallel (default 8)")
    stats = add("stats", cmd_stats, "queue depth, failed jobs, and hit ratio and counters from /metrics URLs")
    stats.add_argument("--metrics-url", action="append", default=[], help="a /metrics URL to read (repeatable)")
    add("requeue-failed", cmd_requeue_failed, "retry every job in RQ's failed registry")
    add("doctor", cmd_doctor, "check Redis, the Clerk key, the signing secrets and the worker")
    send = add("send-test-event", cmd_send_test_event, "post a correctly signed sample event to a deployment")
    send.add_argument("url", help="e.g. https://example.com/webhooks/clerk")
    send.add_argument("--user-id", default="user_2testevent0000000000000000")
    send.add_argument("--org-id", default="org_2testevent00000000000000")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ClerkCacheError, RedisError) as exc:
        message = str(exc) if isinstance(exc, ClerkCacheError) else f"Redis: {type(exc).__name__}: check REDIS_URL"
        print(f"clerk-org-cache {args.command}: {message}", file=sys.stderr)
        return 1
