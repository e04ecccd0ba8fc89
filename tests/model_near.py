"""The near-cache's actors for the model check (tests/test_model_check.py): app processes and the intake's wait.

A process is the real `cache.near.NearCache` with its two control-plane threads not started
(`SteppedNearCache`): the model runs one iteration of each thread's loop as one step, calling the
class's own methods (`_register` / `_renew` as `_renew_loop` chooses between them, `_handle` as
`_listen` calls it for one message), so every decision (the lease from the send time, the count
check, the epoch, what a drop empties, when to acknowledge) is the product's. Its lookups are the
library's lookup with that near-cache (`ReadPath(near=...)`), which takes the ticket and keeps or
refuses the value itself.

Time is not faked. A process's lease running out on its own clock is a step that ends its lease
view now (`lapse`), as the existing model deletes a lookup's lease key for a lease expiring; when
the intake's wait for an id runs out, the model first lapses that id's process if its lease in force
was sent before the publish's reply, which is what the margin argument of docs/architecture.md
guarantees by then (a lease sent later than the reply is treated as outliving the intake's wait, the
harder case: only the count check may stop it from serving).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from cache import contract
from cache.effects import Program, RedisCommand, RunScript, Sleep
from cache.io import SyncIO
from cache.near import NearCache, _Incarnation, clock
from cache.protocol import NEAR_LISTING_GRACE_MS, NearOutcome, NearRegistry
from cache.read_path import ReadPath

NEAR_LEASE_MS = 2_000
NEAR_SIZE = 3  # every user fits: the invariant's reads (`get` moves an entry to the end) change no eviction


class SteppedNearCache(NearCache):
    """`NearCache` whose control-plane threads the model check runs a step at a time on its own Redis client."""

    def __init__(self, redis: Redis) -> None:
        self._model_redis = redis
        super().__init__("redis://model.invalid", size=NEAR_SIZE, lease_ms=NEAR_LEASE_MS)

    def _ensure_started(self) -> None:
        """What `NearCache._ensure_started` does, minus the threads: their loops' bodies are model steps."""
        if self._started_pid is None:
            self._started_pid = os.getpid()
            self._control = self._model_redis
            self._subscriber = self._model_redis


@dataclass
class NearProcess:
    """One app process: its near-cache, its lookups' `ReadPath`, and the subscriptions its listener reads."""

    near: SteppedNearCache
    read_path: ReadPath
    io: SyncIO
    listening: list[_Incarnation] = field(default_factory=list)  # the current one last

    def control_step(self) -> None:
        """One turn of `NearCache._renew_loop`: register (subscribe, then register) if it has no id, else renew."""
        incarnation = self.near._incarnation
        if incarnation is None:
            self.near._register(self.io)
            if self.near._incarnation is not None and self.near._incarnation not in self.listening:
                self.listening.append(self.near._incarnation)
        else:
            self.near._renew(self.io, incarnation)

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
            inbox.pop(incarnation.id, None)
        return handled

    def lapse(self) -> None:
        """As time passing would: its own clock reaches the end of the lease in force (it stops serving)."""
        self.near._valid_until = min(self.near._valid_until, clock())

    def serving_as(self, near_id: str) -> bool:
        incarnation = self.near._incarnation
        return incarnation is not None and incarnation.id == near_id and self.near.serving

    def close(self) -> None:
        self.near.close()
        for incarnation in self.listening:
            incarnation.pubsub.close()
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
