"""How many replicas an acknowledged revocation must reach before we say so.

Redis replicates asynchronously: on a failover the promoted replica can lack writes
the old primary acknowledged, which here would undo a revocation we answered 2xx
for. So the intake (and every invalidation) sends ``WAIT`` on the same connection
right after its script and treats too few acknowledgements as failure (503: Svix
retries; the keys are already deleted on the primary meanwhile).

``REDIS_WAIT_REPLICAS=auto`` (the default): under Sentinel, **every replica a failover
could promote**: those the sentinels list for the master that they do not hold down or
cannot reach (a failover skips those), together with every replica the primary lists,
online or still syncing; at least one. On a lone Redis, none. A number overrides it
(0 turns WAIT off).

Why not the replicas the primary reports online (what this did until the chaos soak
found the hole, docs/chaos.md): a write that only some candidates acknowledged is lost
whenever Sentinel promotes one of the others, and it can. A promotion command that
reached a stalled replica late, after the sentinels had given up on it and promoted
another, left two primaries for seconds, each with clients; a primary restarted empty
while the sentinels failed over did the same. In both the primary listed only the
replica still following it, which acknowledged, then followed the other primary and
dropped the write. When every candidate must acknowledge, each holds the write, and a
primary cut off from any of them cannot acknowledge at all: a 503, which Svix retries.

What remains (Redis documents that WAIT does not make it strongly consistent): a
replica down when a write was acknowledged, back and still resyncing when the primary
dies, promoted because every replica that acknowledged is unavailable by then.

The sentinels are asked at most every `KNOWN_REFRESH_S` (and before the first write);
the primary's own list comes with each write's pipeline, so a replica that joined since
counts at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from cache.config import Settings
from cache.effects import RedisCommand
from cache.errors import NotReplicated

__all__ = ["KNOWN_REFRESH_S", "NotReplicated", "ReplicaWait", "WaitPolicy", "listed_replicas", "online_replicas"]

KNOWN_REFRESH_S = 2.0  # how often the sentinels are asked again which replicas a failover could promote


@dataclass(frozen=True)
class WaitPolicy:
    replicas: int | None  # None: auto
    timeout_ms: int
    under_sentinel: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> WaitPolicy:
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_ms, bool(settings.redis_sentinels))

    @property
    def needs_replica_count(self) -> bool:
        return self.replicas is None and self.under_sentinel

    def required(self, known_replicas: int) -> int:
        if self.replicas is not None:
            return self.replicas
        return max(known_replicas, 1) if self.under_sentinel else 0


class ReplicaWait:
    """Adds ``INFO replication`` and ``WAIT`` to a write's pipeline and checks the answer.

    ``WAIT`` needs its replica count before the answer that tells how many replicas the
    primary lists, so it uses the larger of the sentinels' count and the count seen by the
    previous write. If replicas joined since, the write fails once (503, retried) and the
    next one waits for them all.
    """

    def __init__(self, policy: WaitPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._listed: int | None = None  # replicas the primary listed, any state, at the last write
        self._known: int | None = None  # replicas the sentinels list
        self._known_at = -KNOWN_REFRESH_S  # time.monotonic() of the last answer from a sentinel

    @property
    def active(self) -> bool:
        return self.policy.needs_replica_count or self.policy.required(0) > 0

    @property
    def needs_prime(self) -> bool:
        """True until the primary's replica count is known (learn it with `learn` before the first write)."""
        return self.policy.needs_replica_count and self._listed is None

    @property
    def needs_known(self) -> bool:
        """True when the sentinels should be asked again (`know` their answer): never asked, or not lately."""
        return self.policy.needs_replica_count and time.monotonic() - self._known_at >= KNOWN_REFRESH_S

    def learn(self, info: dict[str, Any]) -> None:
        """Take the primary's replica count from an ``INFO replication`` reply."""
        listed = listed_replicas(info)
        with self._lock:
            self._listed = listed

    def know(self, count: int | None) -> None:
        """Take the sentinels' count (`cache.effects.SentinelReplicas`); None (no sentinel answered) keeps the last."""
        if count is None:
            return
        with self._lock:
            self._known, self._known_at = count, time.monotonic()

    def _count(self) -> int:
        return max(self._listed or 0, self._known or 0)

    def commands(self) -> tuple[RedisCommand, ...]:
        """The commands to pipeline after the write, on the same connection: [INFO replication,] WAIT n ms."""
        with self._lock:
            guess = self.policy.required(self._count() if self._listed is not None else 1)
        wait = RedisCommand(("WAIT", guess, self.policy.timeout_ms))
        return (RedisCommand(("INFO", "replication")), wait) if self.policy.needs_replica_count else (wait,)

    def check(self, replies: list[Any]) -> None:
        """Given the replies of the commands `commands` queued; raises NotReplicated if too few acknowledged."""
        acked = int(replies[-1])
        if self.policy.needs_replica_count:
            self.learn(replies[-2])
            if self._known is None:
                raise NotReplicated("no sentinel answered how many replicas the primary has")
            with self._lock:
                required = self.policy.required(self._count())
        else:
            required = self.policy.required(0)
        if acked < required:
            raise NotReplicated(f"the write reached {acked} of {required} required replica(s)")


def listed_replicas(info: dict[str, Any]) -> int:
    """Replicas ``INFO replication`` lists, in any state (online, or still syncing)."""
    return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict))


def online_replicas(info: dict[str, Any]) -> int:
    """Replicas ``INFO replication`` reports online (redis-py parses each ``slaveN`` line into a dict)."""
    return sum(
        1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    )
