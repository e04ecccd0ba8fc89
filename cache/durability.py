"""How many replicas an acknowledged revocation must reach before we say so.

Redis replicates asynchronously: on a failover the promoted replica can lack writes
the old primary acknowledged, which here would undo a revocation we answered 2xx
for. So the intake (and every invalidation) sends ``WAIT`` on the same connection
right after its script and treats too few acknowledgements as failure (503: Svix
retries; the keys are already deleted on the primary meanwhile).

``REDIS_WAIT_REPLICAS=auto`` (the default): under Sentinel, every replica the primary
reports online, and at least one; on a lone Redis (no Sentinel), none. A number
overrides it (0 turns WAIT off). Redis documents that WAIT does not make it strongly
consistent; waiting for every online replica narrows the window most, because
Sentinel promotes the replica with the best replication offset.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cache.config import Settings
from cache.effects import RedisCommand
from cache.errors import NotReplicated

__all__ = ["NotReplicated", "ReplicaWait", "WaitPolicy", "online_replicas"]


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

    def required(self, online_replicas: int) -> int:
        if self.replicas is not None:
            return self.replicas
        return max(online_replicas, 1) if self.under_sentinel else 0


class ReplicaWait:
    """Adds ``INFO replication`` and ``WAIT`` to a write's pipeline and checks the answer.

    ``WAIT`` needs its replica count before the answer that tells how many replicas
    are online, so it uses the count seen by the previous write. If replicas joined
    since, the write fails once (503, retried) and the next one waits for them all.
    """

    def __init__(self, policy: WaitPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._online: int | None = None

    @property
    def active(self) -> bool:
        return self.policy.needs_replica_count or self.policy.required(0) > 0

    @property
    def needs_prime(self) -> bool:
        """True until the online replica count is known (learn it with `learn` before the first write)."""
        return self.policy.needs_replica_count and self._online is None

    def learn(self, info: dict[str, Any]) -> None:
        """Take the online replica count from an ``INFO replication`` reply."""
        online = online_replicas(info)
        with self._lock:
            self._online = online

    def commands(self) -> tuple[RedisCommand, ...]:
        """The commands to pipeline after the write, on the same connection: [INFO replication,] WAIT n ms."""
        with self._lock:
            guess = self.policy.required(self._online if self._online is not None else 1)
        wait = RedisCommand(("WAIT", guess, self.policy.timeout_ms))
        return (RedisCommand(("INFO", "replication")), wait) if self.policy.needs_replica_count else (wait,)

    def check(self, replies: list[Any]) -> None:
        """Given the replies of the commands `commands` queued; raises NotReplicated if too few acknowledged."""
        acked = int(replies[-1])
        if self.policy.needs_replica_count:
            self.learn(replies[-2])
            required = self.policy.required(self._online or 0)
        else:
            required = self.policy.required(0)
        if acked < required:
            raise NotReplicated(f"the write reached {acked} of {required} required replica(s)")


def online_replicas(info: dict[str, Any]) -> int:
    """Replicas ``INFO replication`` reports online (redis-py parses each ``slaveN`` line into a dict)."""
    return sum(
        1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    )
