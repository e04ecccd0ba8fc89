"""The read-through membership cache over blocking clients (the decisions are `cache.read_path`'s).

`MembershipCache` is what threaded app code (Flask, Django, RQ jobs) builds once per
process; `cache.aio.AsyncMembershipCache` is the same cache for asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis import Redis

from cache.breaker import RedisBreaker
from cache.clerk import ClerkClient
from cache.contract import Membership
from cache.durability import ReplicaWait
from cache.protocol import Target
from cache.read_path import CacheStats, ReadPath, fill_for, memberships_from_clerk
from cache.sync_io import SyncIO

__all__ = ["CacheStats", "MembershipCache", "fetch_memberships", "fill_for"]


class MembershipCache:
    """Answers "which orgs is this user in, with which role?" from Redis, else Clerk.

    Build one per process with injected clients; ``redis`` should be a fail-fast
    client such as `cache.connections.cache_redis`.
    """

    def __init__(
        self,
        redis: Redis,
        clerk: ClerkClient,
        *,
        ttl_seconds: int = 300,
        lease_ms: int = 15_000,
        fill_wait_s: float = 2.0,
        breaker: RedisBreaker | None = None,
        durable: ReplicaWait | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.redis = redis
        self.clerk = clerk
        self.read_path = ReadPath(
            ttl_seconds=ttl_seconds, lease_ms=lease_ms, fill_wait_s=fill_wait_s, breaker=breaker, durable=durable
        )
        self._io = SyncIO(redis, fetch=clerk.list_user_memberships, sleep=sleep)

    @property
    def stats(self) -> CacheStats:
        return self.read_path.stats

    @property
    def breaker(self) -> RedisBreaker:
        return self.read_path.breaker

    @property
    def ttl_seconds(self) -> int:
        return self.read_path.ttl_seconds

    def get_memberships(self, user_id: str) -> list[Membership]:
        """The user's memberships; raises ClerkError subclasses only if Clerk is needed and fails."""
        return self._io.run(self.read_path.memberships(user_id))

    def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        """The user's membership in one org, or None: the question most auth checks ask."""
        return self._io.run(self.read_path.membership(user_id, organization_id))

    def invalidate(self, user_id: str) -> None:
        """Drop the user's cached value and void any fill in flight.

        Raises CacheUnavailable if Redis cannot confirm it, or NotReplicated (a
        CacheUnavailable) if too few replicas acknowledged it: the caller must know.
        """
        self._io.run(self.read_path.invalidating(user_id))

    def record(self, targets: list[Target]) -> None:
        self._io.run(self.read_path.recording(targets))


def fetch_memberships(clerk: ClerkClient, user_id: str) -> list[Membership]:
    """Every membership of the user, read from Clerk and mapped to the contract."""
    return memberships_from_clerk(clerk.list_user_memberships(user_id))
