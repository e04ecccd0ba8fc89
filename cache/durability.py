"""How many replicas an acknowledged revocation must reach before we say so.

Redis replicates asynchronously: on a failover the promoted replica can lack writes
the old primary acknowledged, which here would undo a revocation we answered 2xx
for. So the intake (and every invalidation) sends ``WAIT`` on the same connection
right after its script and treats too few acknowledgements as failure (503: Svix
retries; the keys are already deleted on the primary meanwhile).

``REDIS_WAIT_REPLICAS=auto`` (the default): under Sentinel, the write must reach **every
replica a failover could promote**, checked replica by replica rather than counted, as
every sentinel sees the topology right after the ``WAIT``:

- a majority of the sentinels must answer (``SENTINEL MASTER`` and ``SENTINEL REPLICAS``,
  one round trip each), and each must name the node written to as its primary (its
  ``INFO server`` run id is the one the sentinel reports; while a sentinel cannot know that
  run id yet, up to 10 s after a failover or a restart, the address the write's connection
  reached, ``CLIENT INFO``'s ``laddr``, must be the one it names) without holding it down or
  failing it over;
- every replica any of them lists, held up or down, and every replica the node itself lists,
  online or still syncing, must have acknowledged the write's offset (``INFO replication``
  after the ``WAIT`` gives each replica's acknowledged offset). The one exception is a
  replica every sentinel has held down for longer than twice its failover timeout
  (`promotable_replicas` says why that one cannot be promoted without first resyncing);
- and at least one. On a lone Redis, none. A number overrides it (0 turns WAIT off).

Why, rather than the replicas the primary reports online (what this did until the chaos
soak found the hole, docs/chaos.md): a write that only some candidates acknowledged is
lost whenever Sentinel promotes one of the others, and it can. A promotion command that
reached a stalled replica late, after the sentinels had given up on it and promoted
another, left two primaries for seconds, each with clients; a primary restarted empty
while the sentinels failed over did the same; and a replica one sentinel still held down
after its restart was promoted by another that saw it up. Each time the old primary listed
only the replica still following it, which acknowledged, then followed the other primary
and dropped the write. A count of replicas does not close it, nor does one sentinel's view
of which are up; every sentinel's names and the replicas' offsets do. The cost: while a
replica is not following the primary (dead, resyncing, or following another), revocations
get 503 and Svix retries them; a dead one stops counting after twice the failover timeout
(``SENTINEL RESET`` forgets it at once). The keys are deleted on the primary meanwhile.

What remains (Redis documents that WAIT does not make it strongly consistent): a replica
that was left out that way, back with an older copy and promoted before it resynced,
because every replica that acknowledged is unavailable by then; and a replica only a
sentinel that did not answer knows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cache.config import Settings
from cache.effects import Address, RedisCommand, SentinelNodes, SentinelViews
from cache.errors import NotReplicated

__all__ = ["NotReplicated", "ReplicaWait", "WaitPolicy", "promotable_replicas", "replica_offsets"]


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
    """Adds ``INFO`` and ``WAIT`` to a write's pipeline and checks the answers.

    ``WAIT`` needs its replica count before the answers that tell which replicas must acknowledge,
    so it uses the count the previous write needed. If it grew since, the check fails and the record
    is sent once more at once (`cache.protocol.record_program`), now waiting for them all.
    """

    def __init__(self, policy: WaitPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._needed: int | None = None  # how many replicas the last write needed

    @property
    def active(self) -> bool:
        return self.policy.needs_replica_count or self.policy.required(0) > 0

    @property
    def needs_prime(self) -> bool:
        """True until a replica count is known (learn it with `learn` before the first write)."""
        return self.policy.needs_replica_count and self._needed is None

    @property
    def needs_view(self) -> bool:
        """True when `check` needs the sentinels' view (`cache.effects.SentinelView`) of the write's moment."""
        return self.policy.needs_replica_count

    def learn(self, replication: dict[str, Any]) -> None:
        """A first guess from ``INFO replication``: the replicas the node lists."""
        with self._lock:
            self._needed = max(len(replica_offsets(replication)), 1)

    def commands(self) -> tuple[RedisCommand, ...]:
        """The commands to pipeline after the write, on the same connection:
        [INFO replication, INFO server,] WAIT n ms [, INFO replication, CLIENT INFO]."""
        with self._lock:
            guess = self.policy.required(self._needed or 1)
        wait = RedisCommand(("WAIT", guess, self.policy.timeout_ms))
        if not self.policy.needs_replica_count:
            return (wait,)
        info = RedisCommand(("INFO", "replication"))
        return (info, RedisCommand(("INFO", "server")), wait, info, RedisCommand(("CLIENT INFO",)))

    def check(self, replies: list[Any], views: SentinelViews | None = None) -> None:
        """Given the replies of the commands `commands` queued (and, under Sentinel with ``auto``, the
        sentinels' views taken after them); raises NotReplicated unless every required replica acknowledged."""
        if not self.policy.needs_replica_count:
            acked, required = int(replies[-1]), self.policy.required(0)
            if acked < required:
                raise NotReplicated(f"the write reached {acked} of {required} required replica(s)")
            return
        before, server, after, connection = replies[-5], replies[-4], replies[-2], replies[-1]
        if views is None or not views.views:
            raise NotReplicated("no sentinel answered which primary it names")
        if 2 * len(views.views) <= views.asked:
            raise NotReplicated(f"{len(views.views)} of {views.asked} sentinels answered; a majority must")
        for view in views.views:
            if not _is_named_primary(server, connection, view):
                raise NotReplicated("the node written to is not the primary every sentinel names")
            if view.master_flags & _PRIMARY_IN_DOUBT:
                raise NotReplicated("a sentinel holds the primary down or is failing it over")
        target = int(before.get("master_repl_offset", 0))
        acknowledged = replica_offsets(after)
        must = promotable_replicas(views) | replica_offsets(before).keys() | acknowledged.keys()
        with self._lock:
            self._needed = max(len(must), 1)
        missing = sorted(replica for replica in must if acknowledged.get(replica, -1) < target)
        if not must or missing:
            names = ", ".join(f"{host}:{port}" for host, port in missing)
            raise NotReplicated(
                f"the write reached {len(must) - len(missing)} of {max(len(must), 1)} required replica(s)"
                + (f"; not acknowledged by {names}" if names else "")
            )


_PRIMARY_IN_DOUBT = frozenset({"s_down", "o_down", "failover_in_progress"})


def promotable_replicas(views: SentinelViews) -> set[Address]:
    """Every replica a sentinel lists, except one that every sentinel answered for and has held down for
    longer than twice its failover timeout.

    Why that one may be left out: a sentinel promotes only a replica it holds up, and adopts a
    promotion only while the failover that sent it is under way, at most its failover timeout; so a
    replica every sentinel has held down that long can neither be promoted now nor be carrying a
    promotion that will still count (twice, for the sentinels' clocks and ticks). Any other replica,
    down in one sentinel's eyes but up in another's, or down only briefly, may become the primary
    without the write (the chaos soak saw that: docs/chaos.md), so it must acknowledge. The cost: a
    dead replica holds up acknowledgements (503, retried) for that long; ``SENTINEL RESET`` forgets it.
    """
    listed: set[Address] = set().union(*(view.replicas for view in views.views))
    if len(views.views) < views.asked:
        return listed

    def gone(replica: Address) -> bool:
        # a sentinel that reports no failover timeout gives no bound: the replica stays required
        return all(0 < 2 * view.failover_timeout_ms < view.down_ms.get(replica, -1) for view in views.views)

    return {replica for replica in listed if not gone(replica)}


def _is_named_primary(server: dict[str, Any], connection: dict[str, Any], view: SentinelNodes) -> bool:
    """Whether the node written to is the primary the sentinels name: by run id; or, when the sentinel cannot
    know the run id yet, by the address the write's connection reached. It cannot know it for up to 10 s (it
    asks its primary for ``INFO`` every 10 s): after a failover (no run id at all until then), and after the
    node restarted (its last ``INFO`` older than the node's uptime)."""
    if view.master_run_id and str(server.get("run_id", "")) == view.master_run_id:
        return True
    uptime_ms = int(server.get("uptime_in_seconds", 0)) * 1000
    if view.master_run_id and view.master_info_age_ms + 1000 < uptime_ms:  # it knows this node: another one
        return False
    host, _, port = str(connection.get("laddr", "")).rpartition(":")
    return bool(host) and port.isdigit() and (host, int(port)) == view.master_address


def replica_offsets(info: dict[str, Any]) -> dict[Address, int]:
    """Each replica ``INFO replication`` lists, in any state, by address, with the offset it acknowledged."""
    found: dict[Address, int] = {}
    for key, value in info.items():
        if key.startswith("slave") and isinstance(value, dict) and "ip" in value and "port" in value:
            found[(str(value["ip"]), int(value["port"]))] = int(value.get("offset", -1))
    return found
