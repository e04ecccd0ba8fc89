"""Sizing figures for ``./dev bench``: what one Redis primary holds and serves.

- `memory_per_user`: Redis memory per cached user with 1, 10 and 100 orgs per user, filled through
  the real read path (`MembershipCache.get_memberships` on a miss, Clerk stand-in at 0 ms), as the
  ``INFO memory`` delta of a freshly flushed server: the value, the user's entry in each org's
  ``org-users:<orgId>`` index, the keyspace's own overhead (dict entries, expiry entries); leases
  are gone once a fill is done (checked).
- `hits_vs_processes`: hit lookups/s that P client processes (1, 2, 4) get from one redis-server,
  each looping `get_memberships` on random warm users, and that server's CPU during the run.

Each step runs against its own redis-server and Clerk stand-in, so nothing else shares them.
Ids, names and image URLs have Clerk's real lengths (a 32-character user id, Clerk's base64 image
URLs), because the value's size is what memory depends on. Orgs are shared: each has about
`MEMBERS_PER_ORG` members, so an org's index key is paid for by all its members.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from redis import Redis

from cache import MembershipCache
from cache.contract import org_index_key, user_orgs_key
from devstack.clerk_standin import ClerkStandIn
from devstack.redis_server import RedisServer
from tests.support import CLERK_KEY, cached_users, held_leases, make_cache

# A team. Redis 7.2+ stores a set this small as a compact listpack; 7.0 as a hash table (reported as
# "index_encoding"), which costs about 90 bytes per member.
MEMBERS_PER_ORG = 25
GIB = 2**30  # what redis.conf means by ``maxmemory 1gb``


def sizing_user(i: int) -> str:
    return f"user_2siz{i:023d}"  # 32 characters, like Clerk's user ids


def sizing_org(i: int) -> str:
    return f"org_2siz{i:023d}"  # 31 characters, like Clerk's org ids


def clerk_image_url(org_id: str) -> str:
    """An org's default image URL as Clerk builds it: base64 of a small JSON document (~200 characters)."""
    doc = {"type": "default", "iid": "ins_2sizing0000000000000000000", "rid": org_id, "initials": "S"}
    return "https://img.clerk.com/" + base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


@dataclass
class World:
    """A fresh redis-server and Clerk stand-in for one sizing step, and one cache (one connection) on them."""

    server: RedisServer
    clerk: ClerkStandIn
    redis: Redis
    cache: MembershipCache
    next_org: int = 0
    next_user: int = 0

    def users_in_shared_orgs(self, users: int, orgs_per_user: int) -> list[str]:
        """New users in Clerk, each in ``orgs_per_user`` distinct orgs of a pool sized so each org has
        about `MEMBERS_PER_ORG` members."""
        pool_size = max(orgs_per_user, users * orgs_per_user // MEMBERS_PER_ORG)
        pool = []
        for _ in range(pool_size):
            org_id = sizing_org(self.next_org)
            self.next_org += 1
            name = f"Sizing Team {self.next_org:05d}"
            pool.append(self.clerk.create_org(name, org_id=org_id, image_url=clerk_image_url(org_id))["data"]["id"])
        ids = []
        for i in range(users):
            user_id = sizing_user(self.next_user)
            self.next_user += 1
            for j in range(orgs_per_user):
                self.clerk.add_membership(user_id, pool[(i * orgs_per_user + j) % pool_size])
            ids.append(user_id)
        return ids


@contextmanager
def world() -> Iterator[World]:
    with RedisServer() as server, ClerkStandIn(secret_key=CLERK_KEY) as clerk:
        redis = server.client()
        cache = make_cache(server.url, clerk.url)
        try:
            yield World(server, clerk, redis, cache)
        finally:
            cache.redis.close()
            redis.close()


# -- memory per cached user ------------------------------------------------------------------------


def memory_per_user(quick: bool) -> dict[str, dict[str, Any]]:
    plan = {1: 2000, 10: 2000, 100: 500} if not quick else {1: 300, 10: 300, 100: 100}
    with world() as w:
        return {str(orgs): _memory_for(w, orgs, users) for orgs, users in plan.items()}


def _memory_for(w: World, orgs_per_user: int, users: int) -> dict[str, Any]:
    w.redis.flushall()
    (warm_up,) = w.users_in_shared_orgs(1, 1)
    w.cache.get_memberships(warm_up)  # the scripts loaded and both connections open before "before"
    ids = w.users_in_shared_orgs(users, orgs_per_user)
    keys_before, before = w.redis.dbsize(), _settled_used_memory(w.redis)
    for user_id in ids:
        w.cache.get_memberships(user_id)
    keys_after, after = w.redis.dbsize(), _settled_used_memory(w.redis)
    if held_leases(w.redis) or len(cached_users(w.redis)) != users + 1:
        raise AssertionError("the fill left leases behind or did not cache every user")
    per_user = (after - before) / users
    index = org_index_key(sizing_org(w.next_org - 1))
    return {
        "users": users,
        "org_index_keys": keys_after - keys_before - users,
        "members_per_org": MEMBERS_PER_ORG,
        "index_encoding": w.redis.object("ENCODING", index).decode(),
        "value_bytes": w.redis.strlen(user_orgs_key(ids[0])),
        "value_memory_usage": w.redis.memory_usage(user_orgs_key(ids[0])),
        "bytes_per_user": per_user,
        "users_per_gib": GIB / per_user,
    }


def _settled_used_memory(redis: Redis) -> int:
    """``used_memory`` without client buffers, which come and go with the traffic. Redis updates its
    clients' share in a cron (10 times a second), and a server's first INFO allocates for itself: so
    read twice, a moment apart."""
    redis.info("memory")
    time.sleep(0.25)
    info = redis.info("memory")
    return int(info["used_memory"]) - int(info["mem_clients_normal"])


# -- hit lookups/s by client processes -------------------------------------------------------------


def hits_vs_processes(quick: bool) -> dict[str, Any]:
    warm, seconds = (300, 2.0) if quick else (1000, 5.0)
    load_before = os.getloadavg()[0]  # other work on the machine takes cores from the clients and Redis
    with world() as w:
        ids = w.users_in_shared_orgs(warm, 3)
        for user_id in ids:
            w.cache.get_memberships(user_id)
        by_processes = {str(p): _hits_with(w, ids, p, seconds) for p in (1, 2, 4)}
    cpus = os.cpu_count()
    return {
        "warm_users": warm,
        "orgs_per_user": 3,
        "seconds": seconds,
        "note": f"{cpus} cores shared by the client processes, redis-server and whatever else runs here",
        "load_average_1m_before": load_before,
        "by_processes": by_processes,
    }


def _hits_with(w: World, ids: list[str], processes: int, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")  # the parent runs the stand-in's threads: no fork
    ready = ctx.Barrier(processes + 1)
    results: Queue[tuple[int, int, float, float]] = ctx.Queue()
    children = [
        ctx.Process(target=hit_loop, args=(w.server.url, w.clerk.url, ids, seconds, ready, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        cpu_before = _redis_cpu(w.redis)
        ready.wait(timeout=30)  # until every child has connected
        started = time.perf_counter()
        done = [results.get(timeout=seconds + 60) for _ in children]
        wall = time.perf_counter() - started
        cpu = _redis_cpu(w.redis) - cpu_before
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join()
    lookups = sum(n for n, _, _, _ in done)
    if sum(hits for _, hits, _, _ in done) != lookups:
        raise AssertionError("a lookup in the hit loop was not a hit")
    return {
        "hits_per_s": sum(n / elapsed for n, _, elapsed, _ in done),
        "redis_cpu": cpu / wall,  # cores: 1.0 is one core busy all the time
        "redis_cpu_us_per_hit": cpu / lookups * 1e6,
        "clients_cpu": sum(cpu_s for _, _, _, cpu_s in done) / wall,
    }


def _redis_cpu(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def hit_loop(
    redis_url: str,
    clerk_url: str,
    ids: list[str],
    seconds: float,
    ready: Barrier,
    results: Queue[tuple[int, int, float, float]],
) -> None:
    """One client process: look up random warm users for ``seconds``; report (lookups, hits, elapsed, CPU s)."""
    cache = make_cache(redis_url, clerk_url)
    pick = random.Random().choice
    cache.get_memberships(ids[0])  # connected before the clock starts
    hits_before = cache.stats.snapshot()["hits"]
    ready.wait(timeout=30)
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    lookups = 0
    while time.perf_counter() < deadline:
        cache.get_memberships(pick(ids))
        lookups += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    results.put((lookups, cache.stats.snapshot()["hits"] - hits_before, elapsed, cpu))


# -- the lines ./dev bench prints --------------------------------------------------------------------


def sizing_lines(r: dict[str, Any]) -> list[str]:
    memory, hits = r["memory_per_user"], r["hits_vs_processes"]
    some = next(iter(memory.values()))
    lines = [
        f"Redis memory per cached user (INFO used_memory delta: value, org index entries, keyspace overhead; "
        f"orgs of ~{some['members_per_org']} members, each org's index set a {some['index_encoding']}):"
    ]
    lines += [
        f"  {n:>3} org(s): {v['bytes_per_user']:,.0f} B/user, {v['users_per_gib']:,.0f} users per GiB (the value"
        f" alone: MEMORY USAGE {v['value_memory_usage']:,} B, {v['value_bytes']:,} B of JSON)"
        for n, v in memory.items()
    ]
    lines.append(
        f"hit lookups/s from one redis-server, {hits['warm_users']:,} random warm users with {hits['orgs_per_user']}"
        f" orgs, {hits['seconds']:g} s each; {hits['note']} (load average {hits['load_average_1m_before']:.1f} before):"
    )
    lines += [
        f"  {p} client process(es): {v['hits_per_s']:,.0f}/s, redis-server {v['redis_cpu'] * 100:.0f} % of a core"
        f" ({v['redis_cpu_us_per_hit']:.1f} µs/hit), clients {v['clients_cpu'] * 100:.0f} %"
        for p, v in hits["by_processes"].items()
    ]
    return lines
