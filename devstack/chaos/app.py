"""An app process of the chaos soak: lookups (sync or async) or door decisions, each one written down.

``python -m devstack.chaos.app MODE OUT USERS ORGS`` reads its Redis (Sentinel, WAIT) and Clerk from the
environment as app code does (`cache.build_cache` / `cache.aio.build_cache`), and appends one line per
finished operation to OUT: when it was invoked (``t0``) and when it completed (``t1``), by the clock of
this machine, with its answer or its error. The oracle decides afterwards whether each answer was allowed.
MODE: ``sync`` (threads over one `MembershipCache`), ``async`` (tasks over one `AsyncMembershipCache`),
``door`` (`cache.authz.authorize` over a sync cache, one `RequestMemo` per check).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cache import Membership, build_cache
from cache.aio import build_cache as build_async_cache
from cache.authz import RequestMemo, authorize
from cache.config import Settings
from cache.errors import Denied
from devstack.chaos.history import History

DOOR_ROLES = ("org:admin", "org:billing")  # the roles the door lets in
PAUSE_S = 0.004  # between two operations of one thread or task: bounds the history's size
THREADS = 2
TASKS = 4


def answer(memberships: list[Membership]) -> list[list[object]]:
    """What the oracle compares: per org, role, name, slug and permissions."""
    return [
        [m.organization_id, m.role, m.organization_name, m.organization_slug, list(m.permissions)] for m in memberships
    ]


def run_sync(out: History, users: list[str], seed: int) -> None:
    cache = build_cache(Settings.from_env(process="library"))

    def loop(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        while True:
            user = rng.choice(users)
            t0 = time.time()
            try:
                got = answer(cache.get_memberships(user))
            except Exception as exc:
                out.write("lookup", u=user, t0=t0, t1=time.time(), e=type(exc).__name__)
            else:
                out.write("lookup", u=user, t0=t0, t1=time.time(), r=got)
            time.sleep(PAUSE_S)

    _threads(loop)


def run_door(out: History, users: list[str], orgs: list[str], seed: int) -> None:
    cache = build_cache(Settings.from_env(process="library"))

    def loop(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        while True:
            user, org = rng.choice(users), rng.choice(orgs)
            t0 = time.time()
            try:
                decision = authorize(RequestMemo(), user, org, DOOR_ROLES, cache.get_memberships).role
            except Denied as denied:
                decision = denied.code
            except Exception as exc:
                out.write("door", u=user, o=org, t0=t0, t1=time.time(), e=type(exc).__name__)
                continue
            out.write("door", u=user, o=org, t0=t0, t1=time.time(), d=decision)
            time.sleep(PAUSE_S)

    _threads(loop)


def _threads(loop: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def run_async(out: History, users: list[str], seed: int) -> None:
    cache = build_async_cache(Settings.from_env(process="library"))

    async def loop(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        while True:
            user = rng.choice(users)
            t0 = time.time()
            try:
                got = answer(await cache.get_memberships(user))
            except Exception as exc:
                out.write("lookup", u=user, t0=t0, t1=time.time(), e=type(exc).__name__)
            else:
                out.write("lookup", u=user, t0=t0, t1=time.time(), r=got)
            await asyncio.sleep(PAUSE_S)

    await asyncio.gather(*(loop(i) for i in range(TASKS)))


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in ("sync", "async", "door"):
        print("usage: python -m devstack.chaos.app sync|async|door OUT USERS ORGS", file=sys.stderr)
        return 2
    mode, path, users, orgs = argv[0], Path(argv[1]), argv[2].split(","), argv[3].split(",")
    out = History(path)
    seed = os.getpid()
    out.write("start", pid=seed, t=time.time())
    if mode == "sync":
        run_sync(out, users, seed)
    elif mode == "door":
        run_door(out, users, orgs, seed)
    else:
        asyncio.run(run_async(out, users, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
