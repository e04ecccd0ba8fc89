"""Faults at random, from a seed, one at a time, each written to the history with how long it took.

The first round goes through every kind once, in a seeded order (so even a short run meets each), then
kinds are drawn at random. Between two faults a seeded pause; a fault that itself fails (a failover that
took too long) is written down as such and the run goes on.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable

from devstack.chaos.history import History
from devstack.chaos.topology import PROXIED_APP, ChaosTopology, Child

KINDS = (
    "primary_kill",
    "primary_kill_lagging",
    "primary_restart_empty",
    "replica_restart_empty",
    "worker_kill",
    "web_kill",
    "app_kill",
    "app_stop",
    "redis_cut",
    "clerk_latency",
    "clerk_429",
    "clerk_5xx",
)
BASE_LATENCY_S = 0.005
ANSWER_DELAY_S = 0.004  # an answer lands this long after it was computed: reads race changes (as in test_soak)


class FaultInjector:
    def __init__(
        self, topology: ChaosTopology, rng: random.Random, history: History, *, pause_s: tuple[float, float]
    ) -> None:
        self.topology = topology
        self.clerk = topology.clerk
        self.rng = rng
        self.history = history
        self.pause_s = pause_s
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self._actions: dict[str, Callable[[], dict[str, object]]] = {
            "primary_kill": self.primary_kill,
            "primary_kill_lagging": lambda: self.primary_kill(lagging=True),
            "primary_restart_empty": self.primary_restart_empty,
            "replica_restart_empty": self.replica_restart_empty,
            "worker_kill": lambda: self.kill_restart(self.topology.workers),
            "web_kill": self.web_kill,
            "app_kill": lambda: self.kill_restart(self.topology.apps),
            "app_stop": self.app_stop,
            "redis_cut": self.redis_cut,
            "clerk_latency": self.clerk_latency,
            "clerk_429": lambda: self.clerk_failures(429),
            "clerk_5xx": lambda: self.clerk_failures(self.rng.choice([500, 502, 503])),
        }

    def start(self) -> FaultInjector:
        self.clerk.latency_s = BASE_LATENCY_S
        self.clerk.answer_delay_s = ANSWER_DELAY_S
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the fault under way (it restores what it broke), then heal Clerk."""
        self._stop.set()
        self._thread.join(60)
        self.clerk.latency_s = BASE_LATENCY_S
        self.clerk.clear_failures()

    def _run(self) -> None:
        first_round = list(KINDS)
        self.rng.shuffle(first_round)
        while not self._stop.wait(self.rng.uniform(*self.pause_s)):
            kind = first_round.pop(0) if first_round else self.rng.choice(KINDS)
            t0 = time.time()
            try:
                detail = self._actions[kind]()
                ok, error = True, None
            except Exception as exc:  # written down; the run goes on
                detail, ok, error = {}, False, f"{type(exc).__name__}: {exc}"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.history.write("fault", kind=kind, t0=t0, t1=time.time(), ok=ok, error=error, **detail)

    # -- the faults -----------------------------------------------------------------------------------

    def primary_kill(self, *, lagging: bool = False) -> dict[str, object]:
        """SIGKILL the primary; Sentinel promotes a replica; the old one comes back as a replica, empty.

        ``lagging``: first the replicas stop applying the primary's stream (CLIENT PAUSE WRITE, as a
        replica that lags behind), so what the primary acknowledged in the last moments is lost with it:
        the loss asynchronous replication allows, and the one WAIT is there to keep from acknowledged events.
        """
        redis = self.topology.redis
        if lagging:
            for replica in redis.replicas:
                replica.client_pause(3000, "WRITE")  # well past the kill: what they hold back is then lost
            time.sleep(self.rng.uniform(0.4, 1.2))  # events arrive meanwhile
        old = redis.kill_primary()
        killed = time.time()
        failover_s = redis.wait_for_failover(old.port, timeout_s=30)
        redis.restart_as_replica(old, timeout_s=20)
        self.topology.write_processes()
        rejoined_s = round(time.time() - killed, 3)
        return {
            "target": f"redis:{old.port}",
            "killed_at": killed,
            "failover_s": round(failover_s, 3),
            "rejoined_s": rejoined_s,
        }

    def primary_restart_empty(self) -> dict[str, object]:
        """The primary crashes and comes straight back on its port with nothing (no persistence), faster
        than the sentinels decide it is down: the replicas resync from it and lose everything too."""
        redis = self.topology.redis
        primary = redis.primary
        primary.kill()
        killed = time.time()
        (primary.log_path.parent / "dump.rdb").unlink(missing_ok=True)  # empty means empty (see topology)
        primary.replica_of = None
        primary.start()
        settled_s = redis.wait_until_settled(timeout_s=30)
        self.topology.write_processes()
        return {"target": f"redis:{primary.port}", "killed_at": killed, "settled_s": round(settled_s, 3)}

    def replica_restart_empty(self) -> dict[str, object]:
        """A replica crashes and comes back empty; it resyncs from the primary."""
        redis = self.topology.redis
        replica = self.rng.choice(redis.replicas)
        replica.kill()
        redis.restart_as_replica(replica, timeout_s=20)
        self.topology.write_processes()
        return {"target": f"redis:{replica.port}"}

    def kill_restart(self, children: list[Child]) -> dict[str, object]:
        child = self.rng.choice(children)
        child.kill()
        time.sleep(self.rng.uniform(0.0, 1.0))
        self.topology.restart(child)
        return {"target": child.name}

    def web_kill(self) -> dict[str, object]:
        web = self.rng.choice(self.topology.webs)
        web.kill()
        down = time.time()
        time.sleep(self.rng.uniform(0.0, 1.0))
        self.topology.restart(web)
        self.topology.wait_web(web)
        return {"target": web.name, "down_s": round(time.time() - down, 3)}

    def app_stop(self) -> dict[str, object]:
        app = self.rng.choice(self.topology.apps)
        stopped_s = self.rng.uniform(0.3, 2.5)
        app.signal(signal.SIGSTOP)
        try:
            time.sleep(stopped_s)
        finally:
            app.signal(signal.SIGCONT)
        return {"target": app.name, "stopped_s": round(stopped_s, 3)}

    def redis_cut(self) -> dict[str, object]:
        """Every Redis connection of the proxied app reset, and new ones refused for a moment."""
        proxy = self.topology.proxy
        assert proxy is not None, "the topology has no proxy"
        hold_s = self.rng.uniform(0.3, 3.0)
        cut = proxy.cut(hold_s)
        time.sleep(hold_s)
        return {"target": f"app-{PROXIED_APP}", "connections": cut, "hold_s": round(hold_s, 3)}

    def clerk_latency(self) -> dict[str, object]:
        latency_s, spike_s = self.rng.uniform(0.2, 0.8), self.rng.uniform(1.0, 3.0)
        self.clerk.latency_s = latency_s
        try:
            time.sleep(spike_s)
        finally:
            self.clerk.latency_s = BASE_LATENCY_S
        return {"latency_s": round(latency_s, 3), "spike_s": round(spike_s, 3)}

    def clerk_failures(self, status: int) -> dict[str, object]:
        n = self.rng.randint(5, 40)
        self.clerk.fail_next(n, status, retry_after=1 if status == 429 else None)
        return {"status": status, "requests": n}
