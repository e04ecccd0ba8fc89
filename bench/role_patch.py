"""Permissions in the value, for ``./dev bench``: what a role change costs, and what permissions cost a hit.

role.updated   A custom role with 8 permissions (3 of them system ones) is held by ``holders`` cached users
               (each in 3 of 20 orgs, holding the role in 2 of them). Clerk loses one permission from the
               role (``update_role``) and the returned ``role.updated`` envelope is posted, signed, to the
               Procfile's web process (gunicorn), with the Procfile's one RQ worker running and Clerk at 60 ms.
               Measured: the time from posting until every holder's ``user-orgs:<id>`` in Redis carries the
               new permission set (Redis polled every 5 ms), and the Clerk calls the stand-in received in
               that interval. Repeated; between two repetitions the permission is given back (another
               role.updated, waited for, not measured), so each repetition removes one.
hit            A warm lookup of a user whose value carries the role's 8 permissions in each of 3 orgs, against
               the same-run baseline: the same lookup of a user in the same 3 orgs holding a role with no
               permissions (``[]``), the two alternating call by call.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import requests
from redis import Redis

from bench.stats import p50_p99_over_reps
from cache import MembershipCache
from cache.contract import CorruptValue, decode_memberships, role_index_key, user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.clerk_standin.shapes import StandInConflict
from devstack.signing import signed_event
from devstack.stack import REPO, LocalStack
from devstack.waiting import wait_until
from tests.support import CLERK_KEY, SIGNING_SECRET, make_cache, stack_env

ROLE = "org:bench_editor"
PLAIN_ROLE = "org:bench_viewer"  # the hit baseline's role: same key length, no permissions
CUSTOM = ["org:invoices:read", "org:invoices:create", "org:invoices:delete", "org:reports:read", "org:reports:export"]
SYSTEM = ["org:sys_memberships:read", "org:sys_profile:manage", "org:sys_domains:read"]
PERMISSIONS = [*SYSTEM, *CUSTOM]  # 8, as a membership's permissions list them
ORGS = 20
CLERK_LATENCY_S = 0.060
GOAL_SECONDS = 1.0
GOAL_CLERK_CALLS = 2
GOAL_HIT_RATIO = 1.1


def _holder(i: int) -> str:
    return f"user_2brole{i:06d}"


def _ensure_roles(clerk: ClerkStandIn) -> None:
    """The custom permissions and the two roles, once per stand-in (Bench shares one across steps)."""
    try:
        for key in CUSTOM:
            clerk.create_permission(key)
    except StandInConflict:
        return  # made by the other step
    clerk.create_role(ROLE, "Bench Editor", PERMISSIONS)
    clerk.create_role(PLAIN_ROLE, "Bench Viewer", [])


def _right(redis: Redis, keys: Sequence[str], permissions: frozenset[str]) -> int:
    """How many values are there with each of their entries on ROLE carrying exactly ``permissions``."""
    right = 0
    for raw in redis.mget(keys):
        if raw is None:
            continue
        try:
            memberships = decode_memberships(raw)  # memoized by the bytes: a value seen before costs a lookup
        except CorruptValue:
            continue
        right += all(m.role != ROLE or frozenset(m.permissions) == permissions for m in memberships)
    return right


class _Watch:
    """Polls until every value is right, noting when the first one was (the worker's fills have begun)."""

    def __init__(self, redis: Redis, keys: Sequence[str], permissions: list[str]) -> None:
        self.redis, self.keys, self.permissions = redis, keys, frozenset(permissions)
        self.first_right: float | None = None

    def __call__(self) -> bool:
        right = _right(self.redis, self.keys, self.permissions)
        if right and self.first_right is None:
            self.first_right = time.time()
        return right == len(self.keys)


def _post(session: requests.Session, url: str, envelope: dict[str, Any]) -> None:
    body, headers = signed_event(SIGNING_SECRET, envelope)
    response = session.post(url + "/webhooks/clerk", data=body, headers=headers)
    assert response.status_code == 200 and response.json() == {"status": "processed"}, response.text


def role_updated(redis_url: str, clerk: ClerkStandIn, holders: int, reps: int) -> dict[str, Any]:
    """``reps`` role.updated events, each removing one permission from a role ``holders`` cached users hold."""
    _ensure_roles(clerk)
    clerk.latency_s = 0.0
    org_ids = [clerk.create_org(f"Role Bench {i}")["data"]["id"] for i in range(ORGS)]
    users = [_holder(i) for i in range(holders)]
    cache = make_cache(redis_url, clerk.url)
    for i, user_id in enumerate(users):  # the role in two orgs, a plain member of a third
        clerk.add_membership(user_id, org_ids[i % ORGS], ROLE)
        clerk.add_membership(user_id, org_ids[(i + 1) % ORGS], ROLE)
        clerk.add_membership(user_id, org_ids[(i + 2) % ORGS], "org:member")
        cache.get_memberships(user_id)
    redis = Redis.from_url(redis_url)
    keys = [user_orgs_key(u) for u in users]
    full = frozenset(PERMISSIONS)
    assert _right(redis, keys, full) == holders, "warming did not store every holder's permissions"
    session = requests.Session()
    runs: list[dict[str, Any]] = []
    restores: list[float] = []
    log = open(REPO / ".devstack" / "bench-stack.log", "ab")  # noqa: SIM115 - closed below
    with log, LocalStack(stack_env(redis_url, clerk), log=log) as stack:
        clerk.latency_s = CLERK_LATENCY_S
        ignored = {"type": "session.created", "object": "event", "data": {"id": "sess_2bench"}}
        for _ in range(20):  # warm the web process's verify-and-answer path with events it ignores
            body, headers = signed_event(SIGNING_SECRET, ignored)
            assert session.post(stack.url + "/webhooks/clerk", data=body, headers=headers).status_code == 200
        for rep in range(reps):
            removed = CUSTOM[rep % len(CUSTOM)]
            remaining = [p for p in PERMISSIONS if p != removed]
            indexed = int(redis.scard(role_index_key(ROLE)))
            envelope = clerk.update_role(ROLE, permissions=remaining)
            clerk.reset_counts()
            watch = _Watch(redis, keys, remaining)
            posted_at, posted = time.time(), time.perf_counter()
            _post(session, stack.url, envelope)
            acked = time.perf_counter()
            wait_until(watch, 60, what="every value right", poll_s=0.005)
            done_at, done = time.time(), time.perf_counter()
            calls = clerk.call_count()
            role_reads = clerk.arrivals("/v1/organization_roles")
            time.sleep(1.0)  # anything the worker still does about this event, after every value is right
            read_at = role_reads[0] if role_reads else done_at
            first_right = watch.first_right or done_at
            runs.append(
                {
                    "removed": removed,
                    "holders_indexed": indexed,
                    "seconds_until_all_right": done - posted,
                    "clerk_calls": calls,
                    "clerk_role_list_reads": len(role_reads),
                    "clerk_calls_by_1s_later": clerk.call_count(),
                    # where the time went (ms; the stand-in's arrival times and ours are both the wall clock)
                    "ack_ms": (acked - posted) * 1000,
                    "ack_to_role_read_ms": (read_at - posted_at) * 1000 - (acked - posted) * 1000,
                    "role_read_to_first_right_ms": (first_right - read_at) * 1000,
                    "first_to_last_right_ms": (done_at - first_right) * 1000,
                }
            )
            # give the permission back, so the next repetition removes one again (not measured)
            started = time.perf_counter()
            _post(session, stack.url, clerk.update_role(ROLE, permissions=PERMISSIONS))
            wait_until(_Watch(redis, keys, PERMISSIONS), 60, what="every value restored", poll_s=0.005)
            restores.append(time.perf_counter() - started)
    redis.close()
    seconds = [r["seconds_until_all_right"] for r in runs]
    counts = [r["clerk_calls"] for r in runs]
    return {
        "holders": holders,
        "orgs_per_holder": 3,
        "role_permissions": len(PERMISSIONS),
        "clerk_latency_ms": CLERK_LATENCY_S * 1000,
        "repetitions": runs,
        "median_seconds": statistics.median(seconds),
        "max_seconds": max(seconds),
        "median_clerk_calls": statistics.median(counts),
        "max_clerk_calls": max(counts),
        "restore_seconds": restores,
    }


def hit_with_permissions(redis_url: str, clerk: ClerkStandIn, n: int, reps: int) -> dict[str, float]:
    """Warm lookups of a value with 8 permissions per entry vs one with ``[]``, same 3 orgs, alternating."""
    _ensure_roles(clerk)
    clerk.latency_s = 0.0
    ours, plain = "user_2brolehitperm00", "user_2brolehitnone00"
    for i in range(3):
        org = clerk.create_org(f"Role Hit {i}")["data"]["id"]
        clerk.add_membership(ours, org, ROLE)
        clerk.add_membership(plain, org, PLAIN_ROLE)
    cache: MembershipCache = make_cache(redis_url, clerk.url)
    with_permissions, without = cache.get_memberships(ours), cache.get_memberships(plain)
    assert all(len(m.permissions) == len(PERMISSIONS) for m in with_permissions)
    assert all(m.permissions == () for m in without) and len(without) == len(with_permissions) == 3
    result = p50_p99_over_reps(lambda: cache.get_memberships(ours), lambda: cache.get_memberships(plain), n, reps)
    redis = Redis.from_url(redis_url)
    result["value_bytes"] = float(len(redis.get(user_orgs_key(ours)) or b""))
    result["baseline_value_bytes"] = float(len(redis.get(user_orgs_key(plain)) or b""))
    redis.close()
    return result


def role_lines(r: dict[str, Any]) -> list[str]:
    lines = []
    if (u := r.get("role_updated")) is not None:
        verdict = "met" if u["max_seconds"] <= GOAL_SECONDS and u["max_clerk_calls"] <= GOAL_CLERK_CALLS else "NOT met"
        lines.append(
            f"role.updated, {u['holders']:,} cached holders (Clerk {u['clerk_latency_ms']:.0f} ms): "
            f"all right in {u['median_seconds']:.2f} s median, {u['max_seconds']:.2f} s max of "
            f"{len(u['repetitions'])}; Clerk calls {u['median_clerk_calls']:g} median, {u['max_clerk_calls']} max "
            f"(goal ≤ {GOAL_SECONDS:g} s, ≤ {GOAL_CLERK_CALLS} calls: {verdict})"
        )
    if (h := r.get("hit_permissions")) is not None:
        verdict = "met" if h["ratio_p50"] <= GOAL_HIT_RATIO else "NOT met"
        lines.append(
            f"hit with 8 permissions per org vs [] (3 orgs): p50 {h['ours_p50_us']:.0f} vs "
            f"{h['baseline_p50_us']:.0f} µs ({h['ratio_p50']:.2f}x), "
            f"p99 {h['ours_p99_us']:.0f} vs {h['baseline_p99_us']:.0f} µs ({h['ratio_p99']:.2f}x) "
            f"(goal p50 ≤ {GOAL_HIT_RATIO}x: {verdict})"
        )
    return lines


if __name__ == "__main__":
    import argparse

    from devstack.redis_server import RedisServer

    parser = argparse.ArgumentParser(prog="python -m bench.role_patch", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    (REPO / ".devstack").mkdir(exist_ok=True)
    with RedisServer() as redis_server, ClerkStandIn(secret_key=CLERK_KEY) as standin:
        result = {
            "role_updated": role_updated(redis_server.url, standin, 200 if quick else 1000, 2 if quick else 5),
            "hit_permissions": hit_with_permissions(redis_server.url, standin, *((500, 3) if quick else (3000, 7))),
        }
    print(json.dumps(result, indent=2))
    print("\n".join(role_lines(result)))
