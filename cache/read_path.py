"""The lookup's decisions, written once as programs (`cache.effects`) for the sync and async caches.

Read path (see cache/protocol.py for the scripts):

1. ``GET user-orgs:<id>``: a hit costs one round trip.
2. On a miss, ACQUIRE in one round trip: a value that appeared meanwhile is a hit;
   otherwise we get the lease (and call Clerk, then FILL, which stores only if no
   invalidation voided the lease), or we WAIT for whoever holds it, polling for a
   bounded time before answering from Clerk ourselves without storing.
3. If Redis fails, the breaker opens and lookups answer straight from Clerk.

The Clerk read is the Clerk client's own program (`cache.clerk.ClerkReads`: paging,
retries, the fleet's budget), which the lookup yields from, so one runner carries out
every effect of a lookup, the Clerk request and the budget's scripts included.

A value is never stored from a Clerk read that started before an invalidation, and
errors or partial lists are never stored at all.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from prometheus_client import Counter
from redis.exceptions import RedisError

from cache.breaker import RedisBreaker
from cache.clerk import ClerkReads
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
from cache.effects import Program, RedisGet, Sleep
from cache.errors import CacheUnavailable, ClerkError, ClerkNotFound, ClerkUnavailable
from cache.metrics import FILLS, LOOKUPS, SINGLE_FLIGHT_WAITS
from cache.near import NearCache, clock, observe_near
from cache.protocol import (
    Acquired,
    Fill,
    NearRegistry,
    ScriptSupport,
    acquire_call,
    decode_acquired,
    decode_near_get,
    drop_user,
    fill_call,
    near_get_call,
    near_invalidate_program,
    new_token,
    record_program,
    release_call,
)

log = logging.getLogger("cache.membership_cache")


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
    coalesced: int = 0  # async lookups that joined one of the same user not yet sent (cache.aio)
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
    "coalesced": (LOOKUPS, "coalesced"),
    "fills": (FILLS, "stored"),
    "fills_refused": (FILLS, "refused"),
    "waits": (SINGLE_FLIGHT_WAITS, "waited"),
    "wait_fallbacks": (SINGLE_FLIGHT_WAITS, "fell_back_to_clerk"),
}


class ReadPathOptions(TypedDict, total=False):
    """What a cache passes on to its `ReadPath` (both caches take these as keyword arguments)."""

    ttl_seconds: int
    lease_ms: int
    fill_wait_s: float
    breaker: RedisBreaker | None
    durable: ReplicaWait | None
    near: NearCache | None


class ReadPath:
    """The lookup and invalidation as programs, with the state they share across calls
    (breaker, counters, what the server accepts); a cache runs them with its own I/O."""

    def __init__(
        self,
        clerk: ClerkReads,
        *,
        ttl_seconds: int = 300,
        lease_ms: int = 15_000,
        fill_wait_s: float = 2.0,
        breaker: RedisBreaker | None = None,
        durable: ReplicaWait | None = None,
        near: NearCache | None = None,
    ) -> None:
        self.clerk = clerk
        self.near = near
        self.near_registry = NearRegistry()  # what this cache's invalidations saw of the near-caches' registry
        self.ttl_seconds = ttl_seconds
        self.lease_ms = lease_ms
        self.fill_wait_s = fill_wait_s
        self.breaker = breaker or RedisBreaker()
        self.durable = durable
        self.stats = CacheStats()
        self.support = ScriptSupport()

    def memberships_program(self, user_id: str) -> Program[list[Membership]]:
        """The user's memberships; raises ClerkError subclasses only if Clerk is needed and fails."""
        check_user_id(user_id)
        try:
            return (yield from self._lookup_program(user_id))
        except ClerkError:
            self.stats.add("errors")
            raise

    def membership_program(self, user_id: str, organization_id: str) -> Program[Membership | None]:
        """The user's membership in one org, or None: the question most auth checks ask."""
        check_org_id(organization_id)
        return membership_in((yield from self.memberships_program(user_id)), organization_id)

    def invalidate_program(self, user_id: str) -> Program[None]:
        """Drop the user's cached value and void any fill in flight.

        Raises CacheUnavailable if Redis cannot confirm it, or NotReplicated (a
        CacheUnavailable) if too few replicas acknowledged it: the caller must know. Returns once every
        process's near-cache has dropped the user (or its lease ran out), as the intake does.
        """
        targets = [drop_user(user_id)]
        try:
            yield from record_program(targets, durable=self.durable, support=self.support)
            # block_s: under a lookup client's read timeout
            outcome = yield from near_invalidate_program(targets, block_s=0.2, registry=self.near_registry)
        except RedisError as exc:
            raise CacheUnavailable("could not invalidate: Redis unavailable") from exc
        observe_near(outcome)

    # -- the lookup's steps ---------------------------------------------------------------

    def _lookup_program(self, user_id: str) -> Program[list[Membership]]:
        if not self.breaker.allows():
            return (yield from self._fallback_program(user_id))
        near = self.near
        ticket = near.ticket() if near is not None else None  # before the read is sent
        pttl = -2
        try:
            if ticket is None:
                raw = yield RedisGet(user_orgs_key(user_id))
            else:
                raw, pttl = decode_near_get((yield near_get_call(user_id)))
        except RedisError:
            self.breaker.record_failure()
            return (yield from self._fallback_program(user_id))
        self.breaker.record_success()
        if raw is not None:
            try:
                memberships = decode_memberships(raw)
            except CorruptValue:
                log.warning("corrupt cached value for a user; answering from Clerk")
                return (yield from self._fallback_program(user_id, count_as="misses"))
            self.stats.add("hits")
            if near is not None and ticket is not None and pttl > 0:
                near.keep(user_id, memberships, ticket.sent_at + pttl / 1000, ticket)  # refused if overtaken
            return memberships
        self.stats.add("misses")
        return (yield from self._read_through_program(user_id))

    def _read_through_program(self, user_id: str) -> Program[list[Membership]]:
        deadline = time.monotonic() + self.fill_wait_s
        delay = 0.002
        waited = False
        while True:
            token = new_token()
            acquired_at = clock()  # before the lease's grant: a stored value expires no sooner than this + TTL
            try:
                state, raw = decode_acquired((yield acquire_call(user_id, token, self.lease_ms)))
            except RedisError:
                self.breaker.record_failure()
                return (yield from self._fallback_program(user_id))
            except GeneratorExit:
                raise
            except BaseException:  # the caller gave up while the reply was on its way: the lease may be ours
                yield from self._release_program(user_id, token)
                raise
            if state is Acquired.HIT:
                try:
                    return decode_memberships(raw)
                except CorruptValue:
                    return (yield from self._fallback_program(user_id))
            if state is Acquired.LEASE:
                memberships = yield from self._fetch_and_fill_program(user_id, token, acquired_at)
                return memberships if memberships is not None else []
            if not waited:
                waited = True
                self.stats.add("waits")
            if time.monotonic() + delay > deadline:
                self.stats.add("wait_fallbacks")
                return (yield from self._fallback_program(user_id, count_as=None))
            yield Sleep(delay)
            delay = min(delay * 2, 0.025)

    def _fetch_and_fill_program(
        self, user_id: str, token: str, acquired_at: float = 0.0
    ) -> Program[list[Membership] | None]:
        """Call Clerk under our lease and store the answer if the lease survived.

        Returns None for a user Clerk does not know (nothing is stored).
        """
        try:
            memberships = yield from self._fetch_program(user_id)
        except ClerkNotFound:
            yield from self._release_program(user_id, token)
            return None
        except GeneratorExit:  # closed without being driven: no I/O is possible any more
            raise
        except BaseException:  # a Clerk error, or the caller gave up (cancelled): waiters need not wait it out
            yield from self._release_program(user_id, token)
            raise
        near = self.near
        ticket = near.ticket() if near is not None else None  # before the FILL is sent
        try:
            stored = yield fill_call(fill_for(user_id, token, memberships), self.ttl_seconds)
        except RedisError:
            self.breaker.record_failure()
            return memberships
        except GeneratorExit:
            raise
        except BaseException:  # gave up before the FILL's reply: if it did not run, the lease is still ours
            yield from self._release_program(user_id, token)
            raise
        self.stats.add("fills" if stored else "fills_refused")
        if stored and near is not None and ticket is not None:
            near.keep(user_id, memberships, acquired_at + self.ttl_seconds, ticket)
        return memberships

    def _release_program(self, user_id: str, token: str) -> Program[None]:
        """Give the lease back so waiters need not wait it out; best effort."""
        try:
            yield release_call(user_id, token)
        except RedisError:
            self.breaker.record_failure()

    def _fallback_program(self, user_id: str, count_as: str | None = "redis_fallbacks") -> Program[list[Membership]]:
        """Answer from Clerk without touching Redis."""
        if count_as:
            self.stats.add(count_as)
        try:
            return (yield from self._fetch_program(user_id))
        except ClerkNotFound:
            return []

    def _fetch_program(self, user_id: str) -> Program[list[Membership]]:
        self.stats.add("clerk_calls")
        return memberships_from_clerk((yield from self.clerk.user_memberships_program(user_id)))


def membership_in(memberships: list[Membership], organization_id: str) -> Membership | None:
    for membership in memberships:
        if membership.organization_id == organization_id:
            return membership
    return None


def memberships_from_clerk(raw: list[dict[str, Any]]) -> list[Membership]:
    """Clerk's membership objects mapped to the contract (a malformed one is Clerk's error, not a value)."""
    try:
        return [membership_from_clerk(item) for item in raw]
    except CorruptValue as exc:
        raise ClerkUnavailable(f"Clerk answered a malformed membership: {exc}") from exc


def fill_for(user_id: str, token: str, memberships: list[Membership]) -> Fill:
    """The FILL that stores ``memberships`` under ``token``'s lease."""
    return Fill(
        user_id,
        token,
        encode_memberships(memberships),
        tuple(m.organization_id for m in memberships),
        role_keys=tuple(m.role for m in memberships),
    )


class MembershipCacheBase:
    """The base class of `cache.MembershipCache` and `cache.aio.AsyncMembershipCache`: the `ReadPath`
    both run (each with its own runner) and what it counts."""

    def __init__(self, clerk: ClerkReads, **options: Unpack[ReadPathOptions]) -> None:
        self.read_path = ReadPath(clerk, **options)

    @property
    def stats(self) -> CacheStats:
        return self.read_path.stats

    @property
    def breaker(self) -> RedisBreaker:
        return self.read_path.breaker

    @property
    def ttl_seconds(self) -> int:
        return self.read_path.ttl_seconds
