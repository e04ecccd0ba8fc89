"""The read-through membership cache over blocking clients (the decisions are `cache.read_path`'s).

`MembershipCache` is what threaded app code (Flask, Django, RQ jobs) builds once per
process; `cache.aio.AsyncMembershipCache` is the same cache for asyncio.
"""

from __future__ import annotations

from typing import Unpack

from redis import Redis

from cache.clerk import ClerkClient
from cache.contract import Membership, check_org_id
from cache.io import SyncIO
from cache.read_path import (
    CacheStats,
    MembershipCacheBase,
    ReadPathOptions,
    fill_for,
    membership_in,
    memberships_from_clerk,
)

__all__ = ["CacheStats", "MembershipCache", "fetch_memberships", "fill_for"]


class MembershipCache(MembershipCacheBase):
    """Answers "which orgs is this user in, with which role?" from Redis, else Clerk.

    Build one per process with injected clients; ``redis`` should be a fail-fast
    client such as `cache.connections.cache_redis`. Options (`ReadPathOptions`):
    ``ttl_seconds`` (300), ``lease_ms`` (15,000), ``fill_wait_s`` (2.0), ``breaker``,
    ``durable`` (a `ReplicaWait` for invalidations), ``near`` (a `cache.near.NearCache`: in-process hits,
    off by default).

    One runner, over ``redis`` and the Clerk client's session, carries out every effect
    of a lookup: the Clerk read's budget scripts run on ``redis`` too, so build the
    client's `ClerkBudget` over the same Redis (as `cache.build_cache` does).
    """

    def __init__(self, redis: Redis, clerk: ClerkClient, **options: Unpack[ReadPathOptions]) -> None:
        super().__init__(clerk, **options)
        self.redis = redis
        self.clerk = clerk
        self._io = SyncIO(redis, http=clerk.session)

    def get_memberships(self, user_id: str) -> list[Membership]:
        """The user's memberships; raises ClerkError subclasses only if Clerk is needed and fails."""
        near = self.read_path.near
        if near is not None:
            hit = near.get(user_id)  # a dict read: no I/O
            if hit is not None:
                return hit
        return self._io.run(self.read_path.memberships_program(user_id))

    def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        """The user's membership in one org, or None: the question most auth checks ask."""
        near = self.read_path.near
        if near is not None:
            hit = near.get(user_id)
            if hit is not None:
                return membership_in(hit, check_org_id(organization_id))
        return self._io.run(self.read_path.membership_program(user_id, organization_id))

    def invalidate(self, user_id: str) -> None:
        """Drop the user's cached value and void any fill in flight.

        Raises CacheUnavailable if Redis cannot confirm it, or NotReplicated (a
        CacheUnavailable) if too few replicas acknowledged it: the caller must know.
        """
        self._io.run(self.read_path.invalidate_program(user_id))


def fetch_memberships(clerk: ClerkClient, user_id: str) -> list[Membership]:
    """Every membership of the user, read from Clerk and mapped to the contract."""
    return memberships_from_clerk(clerk.list_user_memberships(user_id))
