"""A randomized soak with an oracle.

Random membership changes and org renames are applied to the Clerk stand-in and
delivered as signed webhooks, some duplicated, some held back and delivered late
(so out of order), while threads and processes look users up concurrently and a
real worker process refreshes keys. After every batch of acknowledged deliveries,
a lookup of each user must agree with Clerk on every (user, org) pair whose
changes have all been acknowledged; at the end, everything must agree.

Size knob: SOAK_EVENTS (default 400; e.g. SOAK_EVENTS=20000 for a long run).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient
from redis import Redis

from cache import MembershipCache
from cache.contract import decode_memberships, user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from devstack.signing import new_message_id
from tests.support import make_cache, post_event, wait_until_drained

SOAK_EVENTS = int(os.environ.get("SOAK_EVENTS", "400"))
USERS = [f"user_2soak{i:03d}" for i in range(8)]
ROLES = ["org:admin", "org:member", "org:billing"]

Pair = tuple[str, str]  # (user id, org id)


def lookup_loop(redis_url: str, clerk_url: str, users: list[str], stop: Any, errors: Any) -> None:
    """Runs in other processes: look users up as fast as possible until told to stop."""
    cache = make_cache(redis_url, clerk_url)
    rng = random.Random(os.getpid())
    while not stop.is_set():
        try:
            cache.get_memberships(rng.choice(users))
        except Exception as exc:  # reported to the parent, which fails the test
            errors.put(repr(exc))


@dataclass
class Oracle:
    """Which Clerk changes have been delivered and acknowledged."""

    unacked_pairs: dict[Pair, int] = field(default_factory=dict)
    unacked_orgs: dict[str, int] = field(default_factory=dict)

    def changed(self, scope: Pair | str) -> None:
        table: dict[Any, int] = self.unacked_pairs if isinstance(scope, tuple) else self.unacked_orgs
        table[scope] = table.get(scope, 0) + 1

    def acked(self, scope: Pair | str) -> None:
        table: dict[Any, int] = self.unacked_pairs if isinstance(scope, tuple) else self.unacked_orgs
        table[scope] -= 1
        if not table[scope]:
            del table[scope]

    def settled(self, user_id: str, org_id: str) -> bool:
        return (user_id, org_id) not in self.unacked_pairs and org_id not in self.unacked_orgs


def view(memberships: Any) -> dict[str, tuple[str, str]]:
    return {m.organization_id: (m.role, m.organization_name) for m in memberships}


def truth(clerk: ClerkStandIn, user_id: str) -> dict[str, tuple[str, str]]:
    return {m["organization"]["id"]: (m["role"], m["organization"]["name"]) for m in clerk.memberships_of(user_id)}


def test_soak_lookups_agree_with_clerk_after_every_acknowledged_delivery(
    client: FlaskClient,
    cache: MembershipCache,
    redis: Redis,
    redis_server: RedisServer,
    clerk: ClerkStandIn,
    worker_process: subprocess.Popen[bytes],
) -> None:
    rng = random.Random(int(os.environ.get("SOAK_SEED", "20261125")))
    orgs = [clerk.create_org(f"Org {i}")["data"]["id"] for i in range(5)]
    for user_id in USERS:
        for org_id in rng.sample(orgs, 2):
            clerk.add_membership(user_id, org_id, rng.choice(ROLES))
    clerk.answer_delay_s = 0.004  # answers read at arrival land 4 ms later: reads race changes

    spawn = multiprocessing.get_context("spawn")
    stop, errors = spawn.Event(), spawn.Queue()
    args = (redis_server.url, clerk.url, USERS, stop, errors)
    processes = [spawn.Process(target=lookup_loop, args=args) for _ in range(2)]
    thread_errors: list[str] = []
    stop_threads = threading.Event()

    def thread_loop(seed: int) -> None:
        local = random.Random(seed)
        while not stop_threads.is_set():
            try:
                cache.get_memberships(local.choice(USERS))
            except Exception as exc:
                thread_errors.append(repr(exc))

    threads = [threading.Thread(target=thread_loop, args=(i,), daemon=True) for i in range(3)]
    for p in processes:
        p.start()
    for t in threads:
        t.start()

    oracle = Oracle()
    held_back: list[tuple[dict[str, Any], str, Pair | str]] = []
    acknowledged: set[str] = set()
    violations: list[str] = []
    checked = 0

    def deliver(event: dict[str, Any], msg_id: str, scope: Pair | str) -> None:
        response = post_event(client, event, msg_id=msg_id)
        assert response.status_code == 200, response.json
        if msg_id not in acknowledged:
            acknowledged.add(msg_id)
            oracle.acked(scope)

    try:
        for step in range(1, SOAK_EVENTS + 1):
            # Change Clerk, then deliver at once, while reads that started before the change are still in flight.
            event, scope = random_change(rng, clerk, orgs)
            oracle.changed(scope)
            delivery = (event, new_message_id(), scope)
            due = [d for d in held_back if rng.random() < 0.3]  # late deliveries, so out of order
            held_back = [d for d in held_back if d not in due]
            if rng.random() < 0.15:
                held_back.append(delivery)
            else:
                due.insert(0, delivery)
            due += [d for d in due if rng.random() < 0.2]  # duplicates
            for d in due:
                deliver(*d)
            if step % 5:
                continue
            for user_id in USERS:  # checkpoint: every lookup now starts after those 2xx
                got, want = view(cache.get_memberships(user_id)), truth(clerk, user_id)
                for org_id in set(got) | set(want):
                    checked += 1
                    if oracle.settled(user_id, org_id) and got.get(org_id) != want.get(org_id):
                        violations.append(f"{user_id} {org_id}: cache {got.get(org_id)} clerk {want.get(org_id)}")
        for d in held_back:
            deliver(*d)
    finally:
        stop.set()
        stop_threads.set()
        for p in processes:
            p.join(15)
        for t in threads:
            t.join(15)

    assert not violations, violations[:10]
    assert checked > 0
    assert not thread_errors, thread_errors[:5]
    assert errors.empty(), errors.get()
    assert not oracle.unacked_pairs and not oracle.unacked_orgs

    wait_until_drained(redis)
    for user_id in USERS:
        assert view(cache.get_memberships(user_id)) == truth(clerk, user_id)
        raw = redis.get(user_orgs_key(user_id))
        if raw is not None:
            assert view(decode_memberships(raw)) == truth(clerk, user_id)


def random_change(rng: random.Random, clerk: ClerkStandIn, orgs: list[str]) -> tuple[dict[str, Any], Pair | str]:
    """Apply one random change to Clerk; return its webhook event and what it affects."""
    user_id, org_id = rng.choice(USERS), rng.choice(orgs)
    current = truth(clerk, user_id)
    roll = rng.random()
    if roll < 0.1:
        return clerk.update_org(org_id, name=f"Org {org_id[-4:]} v{rng.randrange(10**6)}"), org_id
    if org_id not in current:
        return clerk.add_membership(user_id, org_id, rng.choice(ROLES)), (user_id, org_id)
    if roll < 0.55:
        return clerk.remove_membership(user_id, org_id), (user_id, org_id)
    new_role = rng.choice([r for r in ROLES if r != current[org_id][0]])
    return clerk.update_membership(user_id, org_id, new_role), (user_id, org_id)
