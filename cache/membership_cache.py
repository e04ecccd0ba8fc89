"""The read-through membership cache: Redis first, Clerk on a miss, leases on fills.

Read path (see cache/protocol.py for the scripts):

1. ``GET user-orgs:<id>``: a hit costs one round trip.
2. On a miss, ACQUIRE in one round trip: a value that appeared meanwhile is a hit;
   otherwise we get the lease (and call Clerk, then FILL, which stores only if no
   invalidation voided the lease), or we WAIT for whoever holds it, polling for a
   bounded time before answering from Clerk ourselves without storing.
3. If Redis fails, the breaker opens and lookups answer straight from Clerk.

A value is never stored from a Clerk read that started before an invalidation, and
errors or partial lists are never stored at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter
from redis import Redis
from redis.exceptions import RedisError

from cache.breaker import RedisBreaker
from cache.clerk import ClerkClient
from cache.contract import (
    CorruptValue,
    Membership,
    check_org_id,
    check_user_id,
    decode_memberships,
    encode_memberships,
    membership_from_clerk,
    user_orgs_key,
)
from cache.durability import ReplicaWait
from cache.errors import CacheUnavailable, ClerkError, ClerkNotFound, ClerkUnavailable
from cache.metrics import FILLS, LOOKUPS, SINGLE_FLIGHT_WAITS
from cache.protocol import Acquired, Fill, Protocol, Target, drop_user, new_token

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    """Counters for operators and tests; increments are thread-safe."""

    hits: int = 0
    misses: int = 0
    clerk_calls: int = 0
    fills: int = 0
    fills_refused: int = 0
    waits: int = 0
    wait_fallbacks: int = 0
    redis_fallbacks: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)
        prometheus = _PROMETHEUS.get(name)
        if prometheus is not None:
            prometheus[0].labels(prometheus[1]).inc(amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in vars(self).items() if not k.startswith("_")}


_PROMETHEUS: dict[str, tuple[Counter, str]] = {
    "hits": (LOOKUPS, "hit"),
    "misses": (LOOKUPS, "miss"),
    "redis_fallbacks": (LOOKUPS, "redis_fallback"),
    "errors": (LOOKUPS, "error"),
    "fills": (FILLS, "stored"),
    "fills_refused": (FILLS, "refused"),
    "waits": (SINGLE_FLIGHT_WAITS, "waited"),
    "wait_fallbacks": (SINGLE_FLIGHT_WAITS, "fell_back_to_clerk"),
}


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
        self.ttl_seconds = ttl_seconds
        self.lease_ms = lease_ms
        self.fill_wait_s = fill_wait_s
        self.breaker = breaker or RedisBreaker()
        self.stats = CacheStats()
        self._protocol = Protocol(redis)
        self._durable = durable
        self._sleep = sleep

    # -- public API ---------------------------------------------------------------

    def get_memberships(self, user_id: str) -> list[Membership]:
        """The user's memberships; raises ClerkError subclasses only if Clerk is needed and fails."""
        check_user_id(user_id)
        try:
            return self._lookup(user_id)
        except ClerkError:
            self.stats.add("errors")
            raise

    def _lookup(self, user_id: str) -> list[Membership]:
        if not self.breaker.allows():
            return self._fallback(user_id)
        try:
            raw = self.redis.get(user_orgs_key(user_id))
        except RedisError:
            self.breaker.record_failure()
            return self._fallback(user_id)
        self.breaker.record_success()
        if raw is not None:
            try:
                memberships = decode_memberships(raw)
            except CorruptValue:
                log.warning("corrupt cached value for a user; answering from Clerk")
                return self._fallback(user_id, count_as="misses")
            self.stats.add("hits")
            return memberships
        self.stats.add("misses")
        return self._read_through(user_id)

    def get_membership(self, user_id: str, organization_id: str) -> Membership | None:
        """The user's membership in one org, or None: the question most auth checks ask."""
        check_org_id(organization_id)
        for membership in self.get_memberships(user_id):
            if membership.organization_id == organization_id:
                return membership
        return None

    def invalidate(self, user_id: str) -> None:
        """Drop the user's cached value and void any fill in flight.

        Raises CacheUnavailable if Redis cannot confirm it, or NotReplicated (a
        CacheUnavailable) if too few replicas acknowledged it: the caller must know.
        """
        self.record([drop_user(user_id)])

    def record(self, targets: list[Target]) -> None:
        try:
            self._protocol.record(targets, durable=self._durable)
        except RedisError as exc:
            raise CacheUnavailable("could not invalidate: Redis unavailable") from exc

    # -- internals ----------------------------------------------------------------

    def _read_through(self, user_id: str) -> list[Membership]:
        deadline = time.monotonic() + self.fill_wait_s
        delay = 0.002
        waited = False
        while True:
            token = new_token()
            try:
                state, raw = self._protocol.acquire(user_id, token, self.lease_ms)
            except RedisError:
                self.breaker.record_failure()
                return self._fallback(user_id)
            if state is Acquired.HIT:
                try:
                    return decode_memberships(raw)
                except CorruptValue:
                    return self._fallback(user_id)
            if state is Acquired.LEASE:
                memberships = self._fetch_and_fill(user_id, token)
                return memberships if memberships is not None else []
            if not waited:
                waited = True
                self.stats.add("waits")
            if time.monotonic() + delay > deadline:
                self.stats.add("wait_fallbacks")
                return self._fallback(user_id, count_as=None)
            self._sleep(delay)
            delay = min(delay * 2, 0.025)

    def _fetch_and_fill(self, user_id: str, token: str) -> list[Membership] | None:
        """Call Clerk under our lease and store the answer if the lease survived.

        Returns None for a user Clerk does not know (nothing is stored).
        """
        try:
            memberships = self._fetch(user_id)
        except ClerkNotFound:
            self._release_quietly(user_id, token)
            return None
        except Exception:
            self._release_quietly(user_id, token)
            raise
        try:
            stored = self._protocol.fill(fill_for(user_id, token, memberships), self.ttl_seconds)
        except RedisError:
            self.breaker.record_failure()
            return memberships
        self.stats.add("fills" if stored else "fills_refused")
        return memberships

    def _release_quietly(self, user_id: str, token: str) -> None:
        """Give the lease back so waiters need not wait it out; best effort."""
        try:
            self._protocol.release(user_id, token)
        except RedisError:
            self.breaker.record_failure()

    def _fallback(self, user_id: str, count_as: str | None = "redis_fallbacks") -> list[Membership]:
        """Answer from Clerk without touching Redis."""
        if count_as:
            self.stats.add(count_as)
        try:
            return self._fetch(user_id)
        except ClerkNotFound:
            return []

    def _fetch(self, user_id: str) -> list[Membership]:
        self.stats.add("clerk_calls")
        return fetch_memberships(self.clerk, user_id)


def fetch_memberships(clerk: ClerkClient, user_id: str) -> list[Membership]:
    """Every membership of the user, read from Clerk and mapped to the contract."""
    raw = clerk.list_user_memberships(user_id)
    try:
        return [membership_from_clerk(item) for item in raw]
    except CorruptValue as exc:
        raise ClerkUnavailable(f"Clerk answered a malformed membership: {exc}") from exc


def fill_for(user_id: str, token: str, memberships: list[Membership]) -> Fill:
    """The FILL that stores ``memberships`` under ``token``'s lease."""
    return Fill(user_id, token, encode_memberships(memberships), tuple(m.organization_id for m in memberships))
