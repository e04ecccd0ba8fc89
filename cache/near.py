"""The near-cache: an in-process LRU tier in front of Redis that never serves past an acknowledged revocation.

Opt-in (``NEAR_CACHE_SIZE``, 0 = off, the default), for `cache.MembershipCache` and
`cache.aio.AsyncMembershipCache` alike (option ``near=``). A local hit is a dict read: no await,
no I/O, no lock. Freshness is kept as Chubby keeps its clients' caches (Burrows, OSDI '06), with
Gray and Cheriton's leases (SOSP '89):

* **Registration under a lease.** Each `NearCache` registers an id in Redis (near_register.lua)
  with a lease of L (``NEAR_CACHE_LEASE_MS``, 2 s) and renews it every L/4, with the same WAIT as
  a record when replicas must acknowledge. It serves local hits only while its own clock says
  ``now < sent + L - margin``, ``sent`` read *before* the renewal went out, so its lease ends
  before Redis's. The clock is CLOCK_BOOTTIME where there is one: it keeps counting while the
  machine is suspended, which CLOCK_MONOTONIC does not.
* **Acknowledged invalidation.** It subscribes to ``clerk-org-cache:near-inval:<id>`` before it
  registers. Whoever revokes (the intake, `invalidate`, the CLI) publishes to every registered id
  after its record (near_publish.lua) and answers only once each has dropped the users and
  acknowledged, or once that id's lease has run out on the revoker's own clock, plus the margin
  (`cache.protocol.near_invalidate_program`). Each message carries the id's count of invalidations;
  a renewal returns the count, and the lease is extended only once that many were handled here,
  so a message lost on a dropped or half-open subscription lets the lease lapse instead.
* **Any doubt empties the tier.** A failed or late renewal (its reply after the lease in force
  ran out), a refused one, a subscription error, a gap in the count: the whole tier is dropped,
  the epoch bumped, and the cache registers again under a new id (dropping the old one). Until
  that succeeds, lookups go to Redis and nothing is kept.
* **Fills sequenced against invalidations.** A value read from Redis (near_get.lua: value and
  PTTL) or stored by a fill is kept only if the epoch read before the read was sent, while the
  lease stood, is still the epoch when its reply is handled. Every handled invalidation, every
  drop and every new registration bumps it, so an invalidation that overtook a read's reply on
  the other connection, or a read sent before the registration that lists this process, is
  never kept.

The guarantee, its one assumption (the process's and the revoker's clocks run at rates within
10 % of each other over a lease, and Redis's clock does not step forward by more than the
listing grace, 2 s), and the cost of an org or role event (it empties every tier) are in
docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.client import PubSub
from redis.exceptions import RedisError

from cache import contract
from cache.config import DEFAULT_NEAR_CACHE_LEASE_MS, MAX_NEAR_CACHE_LEASE_MS, MIN_NEAR_CACHE_LEASE_MS, Settings
from cache.connections import RedisTarget, Role, near_redis
from cache.contract import Membership
from cache.durability import ReplicaWait
from cache.errors import NotReplicated
from cache.io import SyncIO
from cache.metrics import (
    LOOKUPS,
    NEAR_ACK_SECONDS,
    NEAR_DROPS,
    NEAR_KEEPS,
    NEAR_LAPSE_WAIT_SECONDS,
    NEAR_LAPSED,
    NEAR_LEASE_AGE,
)
from cache.protocol import NEAR_ACK_TTL_S, NearOutcome, near_margin_s, near_register_program

log = logging.getLogger("cache.near")

if hasattr(time, "CLOCK_BOOTTIME"):
    clock: Callable[[], float] = functools.partial(time.clock_gettime, time.CLOCK_BOOTTIME)
else:  # pragma: no cover - not Linux
    clock = time.monotonic
"""The near-cache's clock: seconds that keep counting through a suspend (Linux), else monotonic."""

_NEAR_HITS = LOOKUPS.labels("near_hit")
_SUBSCRIBE_WAIT_S = 2.0
_RETRY_S = 0.2  # between attempts to register again


@dataclass(frozen=True, slots=True)
class NearTicket:
    """Taken before a Redis read is sent, while the lease stands: the epoch then, and the time."""

    epoch: int
    sent_at: float


@dataclass
class _Incarnation:
    """One registration: its id, its subscription, and how many invalidations it has handled."""

    id: str
    pubsub: PubSub
    handled: int = 0
    registered: bool = False  # its registration succeeded (so a later one must drop it from the registry)
    taken: bool = False  # the listener thread has it, and closes its subscription when it is replaced


@dataclass
class NearStats:
    """What the tier did (for tests, operators and the benchmarks)."""

    hits: int = 0
    kept: int = 0
    refused: int = 0  # reads whose reply came after an invalidation, or outside the lease
    invalidations: int = 0
    acks: int = 0
    ack_failures: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # whole-tier drops by reason
    registrations: int = 0
    renewals: int = 0


class NearCache:
    """An in-process tier of at most ``size`` users, shared by the caches of one process.

    ``target`` is the Redis the caches use (its control-plane clients are its own, built by
    `cache.connections.near_redis`); ``durable`` the `ReplicaWait` of the intake's records.
    Its threads start here, and again on first use in a forked child (whose tier starts empty).
    """

    def __init__(
        self,
        target: RedisTarget | str,
        *,
        size: int,
        lease_ms: int = DEFAULT_NEAR_CACHE_LEASE_MS,
        durable: ReplicaWait | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a near-cache holds at least one user (NEAR_CACHE_SIZE=0 means none is built)")
        if not MIN_NEAR_CACHE_LEASE_MS <= lease_ms <= MAX_NEAR_CACHE_LEASE_MS:
            raise ValueError(f"lease_ms must be in {MIN_NEAR_CACHE_LEASE_MS}..{MAX_NEAR_CACHE_LEASE_MS}")
        self.target = target
        self.size = size
        self.lease_ms = lease_ms
        self.margin_s = near_margin_s(lease_ms)
        self.durable = durable
        self.stats = NearStats()
        self._entries: OrderedDict[str, tuple[tuple[Membership, ...], float]] = OrderedDict()
        self._valid_until = 0.0  # by `clock`; the tier serves only before it
        self._epoch = 0
        self._generation = 0  # registrations that made the tier serve
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._incarnation: _Incarnation | None = None
        self._previous_id: str | None = None
        self._pending: tuple[int, float, float] | None = None  # a renewal waiting for its count: (count, until, sent)
        self._renewed_at = 0.0
        self._closed = threading.Event()
        self._failing = False  # registration attempts are failing (logged once per streak)
        self._started_pid: int | None = None
        self._control: Redis | None = None
        self._subscriber: Redis | None = None
        _INSTANCES.add(self)
        self._ensure_started()  # register now, so the first lookups need not go to Redis for long

    # -- the lookup's side: no I/O ---------------------------------------------------------------

    def get(self, user_id: str) -> list[Membership] | None:
        """The user's memberships if held and the lease stands, else None (look in Redis)."""
        now = clock()
        if now >= self._valid_until:  # read before the entry: a tier dropped after this is empty below
            return None
        entry = self._entries.get(user_id)
        if entry is None or now >= entry[1]:
            return None
        try:  # noqa: SIM105 - contextlib.suppress costs more than the rest of a hit
            self._entries.move_to_end(user_id)
        except KeyError:
            pass  # dropped meanwhile: this lookup was answered before the drop
        self.stats.hits += 1
        _NEAR_HITS.inc()
        return list(entry[0])

    def ticket(self) -> NearTicket | None:
        """Take before sending a Redis read whose answer may be kept; None: nothing will be kept."""
        self._ensure_started()
        epoch = self._epoch  # before the lease check: a registration in between bumps it
        now = clock()
        if now >= self._valid_until:
            return None
        return NearTicket(epoch, now)

    def keep(self, user_id: str, memberships: list[Membership], expires_at: float, ticket: NearTicket) -> bool:
        """Keep a value read (or stored) under ``ticket`` until ``expires_at`` (by `clock`), if nothing
        was invalidated here since the ticket was taken and the lease still stands."""
        with self._lock:
            now = clock()
            if ticket.epoch != self._epoch or now >= self._valid_until:
                self.stats.refused += 1
                NEAR_KEEPS.labels("refused").inc()
                return False
            if now >= expires_at:
                return False
            self._entries[user_id] = (tuple(memberships), expires_at)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            self.stats.kept += 1
        NEAR_KEEPS.labels("kept").inc()
        return True

    # -- what tests and operators read -------------------------------------------------------------

    @property
    def serving(self) -> bool:
        return clock() < self._valid_until

    @property
    def near_id(self) -> str | None:
        incarnation = self._incarnation
        return incarnation.id if incarnation is not None else None

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return len(self._entries)

    def wait_serving(self, timeout_s: float) -> bool:
        """Until the tier serves (registered, subscribed), or ``timeout_s`` passed."""
        self._ensure_started()
        deadline = time.monotonic() + timeout_s
        while not self.serving:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        """Stop serving, stop the threads, and unregister (best effort)."""
        self._closed.set()
        with self._lock:
            incarnation = self._incarnation
            self._drop_all("closed")
        if incarnation is not None and self._control is not None:
            with contextlib.suppress(RedisError):  # else it lapses by itself
                self._control.zrem(contract.NEAR_CACHES_KEY, incarnation.id)
        with self._wake:
            self._wake.notify_all()

    # -- the control plane: two daemon threads ---------------------------------------------------

    def _ensure_started(self) -> None:
        pid = os.getpid()
        if self._started_pid == pid or self._closed.is_set():
            return
        with self._lock:
            if self._started_pid == pid:
                return
            self._started_pid = pid
            self._control = near_redis(self.target, Role.NEAR)
            self._subscriber = near_redis(self.target, Role.NEAR_SUB)
        for name, run in (("near-renew", self._renew_loop), ("near-listen", self._listen_loop)):
            threading.Thread(target=run, name=f"clerk-org-cache-{name}", daemon=True).start()

    def _after_fork(self) -> None:
        """In a forked child: the parent's threads are not here, nor may its connections be shared."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._entries.clear()
        self._epoch += 1
        self._valid_until = 0.0
        self._incarnation = None
        self._previous_id = None
        self._pending = None
        self._started_pid = None

    def _drop_all(self, reason: str) -> None:
        """Empty the tier and stop serving until a new registration succeeds (the lock is held)."""
        self._valid_until = 0.0
        self._entries.clear()
        self._epoch += 1
        self._pending = None
        if self._incarnation is not None:
            if self._incarnation.registered:  # else the id to drop is still the one before it
                self._previous_id = self._incarnation.id
            if not self._incarnation.taken:  # replaced before the listener took it: nobody else would close it
                self._incarnation.pubsub.close()
            self._incarnation = None
            self.stats.drops[reason] = self.stats.drops.get(reason, 0) + 1
            NEAR_DROPS.labels(reason).inc()
            log.warning("near-cache emptied (%s); lookups go to Redis until it registers again", reason)
        self._wake.notify_all()

    def _renew_loop(self) -> None:
        io = SyncIO(self._control)
        period = self.lease_ms / 4000
        while not self._closed.is_set():
            incarnation = self._incarnation
            try:
                ok = self._register(io) if incarnation is None else self._renew(io, incarnation)
            except Exception:  # never let the thread die: an unexpected error is one more reason to drop
                log.exception("near-cache control plane error")
                with self._lock:
                    self._drop_all("error")
                ok = False
            NEAR_LEASE_AGE.set(clock() - self._renewed_at if self._renewed_at else -1)
            self._closed.wait(period if ok else _RETRY_S)

    def _register(self, io: SyncIO) -> bool:
        """Subscribe under a new id, then register it; serve from the registration's send time."""
        assert self._subscriber is not None
        near_id = f"{os.getpid()}-{secrets.token_hex(8)}"
        pubsub = self._subscriber.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(contract.near_channel(near_id))
            confirmed = pubsub.get_message(timeout=_SUBSCRIBE_WAIT_S)
            if not confirmed or confirmed.get("type") != "subscribe":
                raise RedisError("the subscription was not confirmed")
        except RedisError as exc:
            self._log_failure("near-cache could not subscribe (%s); lookups go to Redis", exc)
            pubsub.close()
            return False
        incarnation = _Incarnation(near_id, pubsub)
        with self._lock:
            if self._closed.is_set():
                pubsub.close()
                return False
            self._incarnation = incarnation  # the listener reads it from now on; the tier is empty
            previous = self._previous_id
            self._wake.notify_all()
        sent_at = clock()
        try:
            io.run(near_register_program(near_id, self.lease_ms, previous, renew=False, durable=self.durable))
        except (RedisError, NotReplicated) as exc:
            self._log_failure("near-cache could not register (%s); lookups go to Redis", exc)
            with self._lock:
                if self._incarnation is incarnation:
                    self._drop_all("registration_failed")
            return False
        with self._lock:
            if self._incarnation is not incarnation:
                return False
            self._previous_id = None
            self._failing = False
            incarnation.registered = True
            self._epoch += 1  # no read sent before this registration may be kept: it was not listed yet
            self._generation += 1
            self._valid_until = sent_at + self.lease_ms / 1000 - self.margin_s
            self._renewed_at = sent_at
            self.stats.registrations += 1
        return True

    def _log_failure(self, message: str, exc: BaseException) -> None:
        """A warning for the first failed attempt of a streak (it retries every 0.2 s), debug after."""
        log.log(logging.DEBUG if self._failing else logging.WARNING, message, exc)
        self._failing = True

    def _renew(self, io: SyncIO, incarnation: _Incarnation) -> bool:
        sent_at = clock()
        try:
            count = io.run(near_register_program(incarnation.id, self.lease_ms, renew=True, durable=self.durable))
        except (RedisError, NotReplicated) as exc:
            with self._lock:
                if self._incarnation is incarnation:
                    self._drop_all(f"renewal_failed:{type(exc).__name__}")
            return False
        with self._lock:
            if self._incarnation is not incarnation:
                return False
            if count < 0:
                self._drop_all("renewal_refused")
                return False
            if clock() >= self._valid_until:  # the lease lapsed before the reply: Redis may have too
                self._drop_all("lapsed")
                return False
            valid_until = sent_at + self.lease_ms / 1000 - self.margin_s
            if incarnation.handled >= count:
                self._extend(valid_until, sent_at)
                self._pending = None
            else:  # invalidations published before the renewal ran are still on their way here
                self._pending = (count, valid_until, sent_at)
            self.stats.renewals += 1
        return True

    def _extend(self, valid_until: float, sent_at: float) -> None:
        if valid_until > self._valid_until:
            self._valid_until = valid_until
            self._renewed_at = sent_at

    def _listen_loop(self) -> None:
        while not self._closed.is_set():
            with self._wake:
                while self._incarnation is None and not self._closed.is_set():
                    self._wake.wait(0.5)
                incarnation = self._incarnation
                if incarnation is not None:
                    incarnation.taken = True
            if incarnation is None:
                continue
            self._listen(incarnation)
            incarnation.pubsub.close()

    def _listen(self, incarnation: _Incarnation) -> None:
        """Handle the incarnation's messages until it is replaced (or its subscription fails)."""
        while self._incarnation is incarnation and not self._closed.is_set():
            try:
                message = incarnation.pubsub.get_message(timeout=0.25)
            except (RedisError, OSError, ValueError) as exc:
                with self._lock:
                    if self._incarnation is incarnation:
                        self._drop_all(f"subscription_lost:{type(exc).__name__}")
                return
            if message is None:
                continue
            if message.get("type") != "message":
                with self._lock:
                    if self._incarnation is incarnation:
                        self._drop_all("subscription_changed")
                return
            self._handle(incarnation, message["data"])

    def _handle(self, incarnation: _Incarnation, data: Any) -> None:
        try:
            payload = json.loads(data)
            token, count, users = str(payload["token"]), int(payload["seq"]), payload["users"]
        except (ValueError, KeyError, TypeError):
            with self._lock:
                if self._incarnation is incarnation:
                    self._drop_all("bad_message")
            return
        with self._lock:
            if self._incarnation is incarnation:  # else the tier was emptied since: nothing of it is left
                if count != incarnation.handled + 1:
                    self._drop_all("missed_invalidation")
                else:
                    incarnation.handled = count
                    if users == "*":
                        self._entries.clear()
                    else:
                        for user_id in users:
                            self._entries.pop(str(user_id), None)
                    self._epoch += 1
                    self.stats.invalidations += 1
                    pending = self._pending
                    if pending is not None and count >= pending[0]:
                        self._pending = None
                        if clock() < self._valid_until:
                            self._extend(pending[1], pending[2])
        self._ack(incarnation.id, token)

    def _ack(self, near_id: str, token: str) -> None:
        """Tell the revoker this id dropped the users (or everything); a failure only makes it wait the lease out."""
        assert self._control is not None
        try:
            with self._control.pipeline(transaction=False) as pipe:
                pipe.rpush(contract.near_ack_key(token), near_id)
                pipe.expire(contract.near_ack_key(token), NEAR_ACK_TTL_S)
                pipe.execute()
            self.stats.acks += 1
        except RedisError as exc:
            self.stats.ack_failures += 1
            log.warning("near-cache could not acknowledge an invalidation (%s); the revoker waits out the lease", exc)


_INSTANCES: weakref.WeakSet[NearCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for near in list(_INSTANCES):
        near._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def near_cache_from_settings(settings: Settings, target: RedisTarget, durable: ReplicaWait | None) -> NearCache | None:
    """The near-cache ``NEAR_CACHE_SIZE`` and ``NEAR_CACHE_LEASE_MS`` ask for, or None when the size is 0."""
    if not settings.near_cache_size:
        return None
    return NearCache(target, size=settings.near_cache_size, lease_ms=settings.near_cache_lease_ms, durable=durable)


def observe_near(outcome: NearOutcome) -> None:
    """Count one revocation's wait on the near-caches (acknowledgement latency, leases waited out)."""
    for seconds in outcome.ack_seconds:
        NEAR_ACK_SECONDS.observe(seconds)
    if outcome.lapsed:
        NEAR_LAPSED.inc(outcome.lapsed)
        NEAR_LAPSE_WAIT_SECONDS.observe(outcome.lapse_wait_s)
