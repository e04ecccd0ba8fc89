"""The near-cache's actors for the model check (tests/test_model_check.py): app processes and the intake's wait.

A process is the real `cache.near.NearCache` with its two control-plane threads not started
(`SteppedNearCache`): the model runs one iteration of each thread's loop as one step, calling the
class's own methods (`_register` / `_renew` as `_renew_loop` chooses between them, `_handle` as
`_listen` calls it for one message), so every decision (the lease from the send time, the count
check, the epoch, what a drop empties, when to acknowledge) is the product's. Its lookups are the
library's lookup with that near-cache (`ReadPath(near=...)`), which takes the ticket and keeps or
refuses the value itself.

Time is not faked, and no lease ends by real time during an example: the leases are the longest the
product takes (`MAX_NEAR_CACHE_LEASE_MS`, 5 s; near_register.lua refuses more), and an example's steps
follow each other within milliseconds (`LEASE_AGE` records the oldest lease any process was found
serving on: the headroom). A lease ends only as a modelled step: a process's lease running out on its
own clock ends its lease view now (`lapse`), as the existing model deletes a lookup's lease key for a
lease expiring; Redis's listing of an id lapsing is `expire_listing`; when the intake's wait for an id
runs out, the model first lapses that id's process if its lease in force was sent before the publish's
reply, which is what the margin argument of docs/architecture.md guarantees by then (a lease sent later
than the reply is treated as outliving the intake's wait, the harder case: only the count check may stop
it from serving). So every step's outcome follows from the steps before it, which Hypothesis's replays
need (a lease lapsing by itself on a loaded machine made them diverge: FlakyStrategyDefinition).

Every subscription a process opens is closed by the end of its example (`NearProcess.close`): a failed
registration's at once, as the product's listener closes one it finds replaced, a replaced one's once its
listener has taken its last message, the rest at teardown; they share the model's connection pool.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.client import PubSub

from cache import contract
from cache.config import MAX_NEAR_CACHE_LEASE_MS
from cache.effects import Program, RedisCommand, RunScript, Sleep
from cache.io import SyncIO
from cache.near import NearCache, _Incarnation, clock
from cache.protocol import NEAR_LISTING_GRACE_MS, NearOutcome, NearRegistry
from cache.read_path import ReadPath

NEAR_LEASE_MS = MAX_NEAR_CACHE_LEASE_MS  # what real time between two steps never reaches (see above)
NEAR_SIZE = 3  # every user fits: the invariant's reads (`get` moves an entry to the end) change no eviction


LEASE_AGE: list[float] = [0.0]  # the oldest lease (seconds since it was sent) a process was found serving on


class Subscriber(Redis):
    """The model's Redis for a process's subscriptions, holding every `PubSub` it opened until it is closed."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(connection_pool=redis.connection_pool)
        self.opened: list[PubSub] = []

    def pubsub(self, **kwargs: Any) -> PubSub:
        pubsub = super().pubsub(**kwargs)  # type: ignore[no-untyped-call]
        self.opened.append(pubsub)
        return pubsub


class SteppedNearCache(NearCache):
    """`NearCache` whose control-plane threads the model check runs a step at a time on its own Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._model_redis = redis
        self.model_subscriber = Subscriber(redis)
        super().__init__("redis://model.invalid", size=NEAR_SIZE, lease_ms=NEAR_LEASE_MS)

    def _ensure_started(self) -> None:
        """What `NearCache._ensure_started` does, minus the threads: their loops' bodies are model steps."""
        if self._started_pid is None:
            self._started_pid = os.getpid()
            self._control = self._model_redis
            self._subscriber = self.model_subscriber


@dataclass
class NearProcess:
    """One app process: its near-cache, its lookups' `ReadPath`, and the subscriptions its listener reads."""

    near: SteppedNearCache
    read_path: ReadPath
    io: SyncIO
    listening: list[_Incarnation] = field(default_factory=list)  # the current one last
    ids: list[str] = field(default_factory=list)  # every id it registered under, in order

    def control_step(self) -> None:
        """One turn of `NearCache._renew_loop`: register (subscribe, then register) if it has no id, else renew."""
        incarnation = self.near._incarnation
        if incarnation is None:
            self.near._register(self.io)
            if self.near._incarnation is not None and self.near._incarnation not in self.listening:
                self.near._incarnation.taken = True  # the listener has it (`NearCache._listen_loop`)
                self.listening.append(self.near._incarnation)
                self.ids.append(self.near._incarnation.id)
            self.close_unheard()
        else:
            self.near._renew(self.io, incarnation)

    def close_unheard(self) -> None:
        """Close the subscriptions of registrations that failed before any message could come (what the
        product's listener does with an incarnation it finds replaced): each holds one of the pool's connections."""
        heard = {id(incarnation.pubsub) for incarnation in self.listening}
        opened = self.near.model_subscriber.opened
        for pubsub in [p for p in opened if id(p) not in heard]:
            pubsub.close()
            opened.remove(pubsub)

    def receive(self, incarnation: _Incarnation, inbox: Counter[str]) -> bool:
        """One turn of `NearCache._listen` on ``incarnation``: handle one message (drop, then acknowledge).
        A replaced incarnation's listener may still be inside ``get_message``: it handles at most that one
        message, then closes the subscription. Returns whether a message was handled."""
        handled = False
        if inbox[incarnation.id] > 0:
            message = incarnation.pubsub.get_message(timeout=2.0)
            assert message is not None and message["type"] == "message", f"no message came: {message}"
            inbox[incarnation.id] -= 1
            self.near._handle(incarnation, message["data"])
            handled = True
        if incarnation is not self.near._incarnation:
            incarnation.pubsub.close()
            self.listening.remove(incarnation)
            self.near.model_subscriber.opened.remove(incarnation.pubsub)
            inbox.pop(incarnation.id, None)
        return handled

    def lapse(self) -> None:
        """As time passing would: its own clock reaches the end of the lease in force (it stops serving)."""
        self.near._valid_until = min(self.near._valid_until, clock())

    def serving_as(self, near_id: str) -> bool:
        incarnation = self.near._incarnation
        return incarnation is not None and incarnation.id == near_id and self.near.serving

    def note_lease_age(self) -> None:
        """Record how old the lease it serves on is, by its clock (the headroom before real time would end it)."""
        if self.near.serving:
            LEASE_AGE[0] = max(LEASE_AGE[0], clock() - self.near._renewed_at)

    def close(self) -> None:
        """Unregister, and close every subscription it opened (none may outlive the example)."""
        self.near.close()
        for pubsub in self.near.model_subscriber.opened:
            pubsub.close()
        self.near.model_subscriber.opened.clear()
        self.listening.clear()


@dataclass
class IntakeWait:
    """The intake's `near_invalidate_program` for one delivery, after its record: publish, then acks or lapses."""

    event: tuple[int, tuple[str, ...]]  # (version, scope) of the event it answers 2xx for
    program: Program[NearOutcome]
    effect: Any = None
    received: float = 0.0  # the near-cache clock right after the publish's reply
    listed: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    born: int = -1


class IntakeNear:
    """Drives one delivery's `near_invalidate_program` against the real scripts, an effect at a time."""

    def __init__(self, redis: Redis, io: SyncIO, registry: NearRegistry) -> None:
        self.r = redis
        self.io = io
        self.registry = registry

    def start(self, wait: IntakeWait, processes: list[NearProcess], inbox: Counter[str]) -> bool:
        """Start the program (no targets: it answers at once) and run it as `advance` does; True: it answered."""
        try:
            wait.effect = next(wait.program)
        except StopIteration:
            return True
        return self.advance(wait, processes, inbox)

    def advance(self, wait: IntakeWait, processes: list[NearProcess], inbox: Counter[str]) -> bool:
        """Run the program until it waits for an acknowledgement not yet pushed, or answers; True: it answered."""
        while True:
            effect = wait.effect
            if isinstance(effect, Sleep):  # near-born changed: it waits out the longest lease, which lapses all
                for process in processes:  # ... sent before now, and the ids it listed are among them
                    process.lapse()
                self.registry.born = wait.born if wait.born >= 0 else None  # as the program does after its sleep
                wait.program.close()
                return True
            if isinstance(effect, RedisCommand) and effect.args[0] == "BLPOP" and not self.r.llen(str(effect.args[1])):
                return False  # no acknowledgement yet
            result = self.io.do(effect)
            if isinstance(effect, RunScript) and effect.name == "near_publish":
                wait.received = clock()
                flat, wait.born = result[1], int(result[2])
                for i in range(0, len(flat), 3):
                    near_id = _text(flat[i])
                    wait.listed.append(near_id)
                    if int(flat[i + 2]) > 0:
                        inbox[near_id] += 1
            if isinstance(effect, RedisCommand) and effect.args[0] == "BLPOP" and result:
                wait.acked.add(_text(result[1]))
            try:
                wait.effect = wait.program.send(result)
            except StopIteration:
                return True

    @staticmethod
    def wait_out(wait: IntakeWait, processes: list[NearProcess]) -> int:
        """The intake's clock passes every listed id's deadline (publish reply + L + margin): each process still
        serving under an unacknowledged listed id on a lease sent no later than the reply has stopped by then.
        Returns how many ids were waited out."""
        unacked = set(wait.listed) - wait.acked
        for process in processes:
            incarnation = process.near._incarnation
            if incarnation is not None and incarnation.id in unacked and process.near._renewed_at <= wait.received:
                process.lapse()
        wait.program.close()
        return len(unacked)


def expire_listing(redis: Redis, near_id: str, within_grace: bool) -> None:
    """As time passing would: the id's lease ends by Redis's clock (still listed for the grace, or past it)."""
    seconds, micros = redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    redis.zadd(
        contract.NEAR_CACHES_KEY, {near_id: now_ms - (1 if within_grace else NEAR_LISTING_GRACE_MS + 1)}, xx=True
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
