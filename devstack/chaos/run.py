"""The driver: start everything, change Clerk and deliver its events while faults happen, then go quiet,
drain, compare Redis with Clerk, stop everything, and let the oracle judge the history.

Everything started is stopped in ``finally``: after an error, and on Ctrl-C (SIGINT) or SIGTERM, both of
which end the run early (a second Ctrl-C during the clean-up is ignored, so the clean-up finishes).
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis
from rq import Queue

from cache import build_cache, contract
from cache.config import Settings
from devstack.chaos.app import answer
from devstack.chaos.delivery import Deliverer
from devstack.chaos.faults import BASE_LATENCY_S, FaultInjector
from devstack.chaos.history import History
from devstack.chaos.monitor import TopologyMonitor
from devstack.chaos.oracle import Oracle
from devstack.chaos.report import build, summary
from devstack.chaos.topology import CLERK_KEY, ChaosTopology
from devstack.chaos.workload import World
from devstack.clerk_standin import ClerkStandIn
from devstack.signing import new_signing_secret
from devstack.stack import REPO

RUN_FILES = ("history.jsonl", "ops-*.jsonl", "*.log", "report.json", "processes.json")


def commit() -> str:
    """HEAD, with ``+dirty`` when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does: through every ``finally``."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    minutes: float, seed: int, out: Path, *, wait_replicas: str = "auto", say: Callable[[str], None] = print
) -> dict[str, Any]:
    """One run; returns the report (also written to ``out/report.json``). ``wait_replicas`` is
    ``REDIS_WAIT_REPLICAS`` for every process (``0``, WAIT off, is the control: it must lose events)."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in RUN_FILES:  # a directory used before: its old history must not be judged again
        for old in out.glob(pattern):
            old.unlink()
    history = History(out / "history.jsonl")
    secret = new_signing_secret()
    clerk = ClerkStandIn(secret_key=CLERK_KEY, latency_s=BASE_LATENCY_S)
    topology: ChaosTopology | None = None
    faults: FaultInjector | None = None
    deliverer: Deliverer | None = None
    monitor: TopologyMonitor | None = None
    started = time.time()
    with sigterm_as_interrupt():
        try:
            clerk.start()
            world = World(clerk, random.Random(f"{seed}:world"), history)
            world.setup()
            say(f"chaos: starting the topology in {out}")
            topology = ChaosTopology(clerk, world, out, secret, wait_replicas=wait_replicas).start()
            webs = dict(zip([w.name for w in topology.webs], topology.web_urls(), strict=True))
            history.write("topology", t=time.time(), webs=webs)
            monitor = TopologyMonitor(topology.redis, history).start()
            deliverer = Deliverer(secret, topology.web_urls, random.Random(f"{seed}:delivery"), history).start()
            faults = FaultInjector(topology, random.Random(f"{seed}:faults"), history, pause_s=(1.0, 4.0)).start()
            say(f"chaos: running for {minutes:g} min (seed {seed})")
            pace = random.Random(f"{seed}:pace")
            end = time.time() + minutes * 60
            while time.time() < end:
                deliverer.send(world.step())
                time.sleep(pace.uniform(0.1, 0.5))  # ~3 changes a second: each user's every ~15 s
            say("chaos: quiet: faults stop, every event is delivered, the worker drains")
            faults.stop()
            deliverer.quiet()
            quiet = time.time()
            wait_for(lambda: deliverer is not None and deliverer.outstanding() == 0, 150)
            history.write("quiet", t=quiet, delivered_s=time.time() - quiet)
            final = final_check(topology, world)
            history.write("final", t=time.time(), **final)
        finally:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up runs to its end
            try:
                if faults is not None:
                    faults.stop()
                if deliverer is not None:
                    deliverer.stop()
                if monitor is not None:
                    monitor.stop()
                if topology is not None:
                    topology.close()
                clerk.stop()
                history.close()
            finally:
                signal.signal(signal.SIGINT, previous)
    verdict = Oracle(out).check()
    info = {
        "seed": seed,
        "minutes": minutes,
        "commit": commit(),
        "wait_replicas": wait_replicas,
        "wall_s": round(time.time() - started, 1),
    }
    report = build(out, verdict, info)
    say(summary(report))
    return report


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def drained(redis: Redis) -> bool:
    """No user waits for a refresh, no drain holds any, no org patch or stash is left, the queue is empty."""
    if redis.scard(contract.PENDING_REFRESH_KEY) or redis.scard(contract.ORG_PATCHES_KEY):
        return False
    for drain in redis.smembers(contract.DRAINS_KEY):
        if redis.scard(contract.refreshing_key(drain.decode() if isinstance(drain, bytes) else drain)):
            return False
    if any(True for _ in redis.scan_iter(match=contract.STASH_PREFIX + "*", count=1000)):
        return False
    return Queue(contract.QUEUE_NAME, connection=redis).count == 0


def truth(clerk: ClerkStandIn, user: str) -> list[list[object]]:
    return sorted(
        [m["organization"]["id"], m["role"], m["organization"]["name"], m["organization"]["slug"], m["permissions"]]
        for m in clerk.memberships_of(user)
    )


def final_check(topology: ChaosTopology, world: World) -> dict[str, Any]:
    """After the quiet drain: every value in Redis equals Clerk, expires within the TTL, and a fresh lookup
    (through Sentinel, as app code does) answers what Clerk holds."""
    primary = topology.redis.primary
    redis = Redis(host="127.0.0.1", port=primary.port, socket_timeout=5)
    started = time.time()
    try:
        is_drained = wait_for(lambda: drained(redis), 90)
        drain_s = round(time.time() - started, 2)
        topology.stop_apps()
        mismatches: list[dict[str, Any]] = []
        overruns: list[dict[str, Any]] = []
        in_redis = 0
        for user in world.all_users:
            want = truth(topology.clerk, user)
            raw = redis.get(contract.user_orgs_key(user))
            if raw is not None:
                in_redis += 1
                got = sorted(answer(contract.decode_memberships(raw)))
                if got != want:
                    mismatches.append({"user": user, "where": "redis", "got": got, "clerk": want})
                ttl_ms = int(redis.pttl(contract.user_orgs_key(user)))
                if ttl_ms > topology.ttl_s * 1000 or ttl_ms == -1:
                    overruns.append({"user": user, "pttl_ms": ttl_ms})
        cache = build_cache(Settings.from_env(topology.env(), process="library"))
        for user in world.all_users:
            got = sorted(answer(cache.get_memberships(user)))
            want = truth(topology.clerk, user)
            if got != want:
                mismatches.append({"user": user, "where": "lookup", "got": got, "clerk": want})
        cache.redis.close()
    finally:
        redis.close()
    return {
        "drained": is_drained,
        "drain_s": drain_s,
        "users_checked": len(world.all_users),
        "values_in_redis": in_redis,
        "mismatches": mismatches,
        "ttl_overruns": overruns,
    }
