"""The refresh work as the worker reads and writes it in Redis: drains, the pending set, org patches.

Only the worker (and the operator CLI's ``warm``, through `worker.refresher.Refresher`)
needs these: a drain job's heartbeat lease, the users it takes and settles, the org
patches waiting, and the batch forms of the lease and fill calls. The script calls are
built in `cache.protocol`, next to the lookup's, so every rule stays in one place; this
store only runs them over one blocking client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis

from cache import contract
from cache.effects import RedisPipeline, RunScript
from cache.io import SyncIO
from cache.protocol import (
    DRAIN_LEASE_MS,
    Acquired,
    DrainRecovery,
    Fill,
    PatchOutcome,
    Stash,
    acquire_call,
    acquire_patch_call,
    decode_acquired,
    decode_drain_recovery,
    decode_patch_acquired,
    fill_call,
    finish_org_patch_call,
    finish_patch_call,
    recover_drains_call,
    release_call,
    take_pending_call,
)


class RefreshStore:
    """The worker's side of the protocol over one blocking Redis client (scripts load once, then run by SHA).

    The ``*_many`` forms send one call per user in a single pipelined round trip.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._io = SyncIO(redis)

    def _pipeline(self, calls: Sequence[RunScript]) -> list[Any]:
        replies: list[Any] = self._io.do(RedisPipeline(tuple(calls)))
        return replies

    # -- leases and fills, a batch at a time ------------------------------------------------

    def acquire_many(
        self, requests: Sequence[tuple[str, str]], lease_ms: int, *, take_over: bool = False
    ) -> list[tuple[Acquired, Any]]:
        """ACQUIRE for each (user id, token), in one round trip; ``take_over`` never answers WAIT."""
        calls = [acquire_call(user_id, token, lease_ms, take_over) for user_id, token in requests]
        return [decode_acquired(reply) for reply in self._pipeline(calls)]

    def fill_many(self, fills: Sequence[Fill], ttl_s: int) -> list[bool]:
        """FILL each, in one round trip (``ttl_s`` unless a Fill names its own lifetime): stored or refused."""
        return [bool(reply) for reply in self._pipeline([fill_call(fill, ttl_s) for fill in fills])]

    def release(self, user_id: str, token: str) -> None:
        """Give a lease back (after a failed Clerk call) so waiters need not wait it out."""
        self._io.do(release_call(user_id, token))

    # -- drain jobs and the users they take -------------------------------------------------

    def start_drain(self, drain_id: str) -> None:
        """Called first by a drain job: events from now on enqueue another job, its lease is taken,
        and users that dead jobs had taken are pending again (`recover_drains`)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(contract.DRAIN_SCHEDULED_KEY)
        pipe.set(contract.drain_lease_key(drain_id), "1", px=DRAIN_LEASE_MS)
        pipe.execute()
        self.recover_drains()

    def renew_drain(self, drain_id: str) -> None:
        """The running job's heartbeat: its users stay its own while this keeps being called."""
        self._redis.set(contract.drain_lease_key(drain_id), "1", px=DRAIN_LEASE_MS)

    def end_drain(self, drain_id: str) -> None:
        """The job is over: drop its lease; users it did not finish go back to the pending set."""
        self._redis.delete(contract.drain_lease_key(drain_id))
        self.recover_drains()

    def recover_drains(self) -> DrainRecovery:
        """Put the users of drain jobs whose lease expired (their worker died) back in the pending set."""
        return decode_drain_recovery(self._io.do(recover_drains_call()))

    def drain_alive(self, drain_id: str) -> bool:
        return bool(self._redis.exists(contract.drain_lease_key(drain_id)))

    def take_pending(self, count: int, drain_id: str) -> list[str]:
        """Pop up to ``count`` users waiting for a refresh into the job's own set; call `done` for them."""
        return [_text(u) for u in self._io.do(take_pending_call(count, drain_id))]

    def done(self, drain_id: str, refreshed: Sequence[str], retry: Sequence[str] = ()) -> None:
        """Finish taken users: forget ``refreshed``, put ``retry`` back in the pending set."""
        pipe = self._redis.pipeline(transaction=True)
        if retry:
            pipe.sadd(contract.PENDING_REFRESH_KEY, *retry)
        if refreshed or retry:
            pipe.srem(contract.refreshing_key(drain_id), *refreshed, *retry)
        pipe.execute()

    def pending_count(self) -> int:
        """Users waiting for a full re-read (not yet taken by a drain job)."""
        return int(self._redis.scard(contract.PENDING_REFRESH_KEY))

    def waiting_work(self) -> int:
        """Users pending, taken by drain jobs, or waiting for an org patch (for the sweep and metrics)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.scard(contract.PENDING_REFRESH_KEY)
        pipe.scard(contract.DRAINS_KEY)
        pipe.scard(contract.ORG_PATCHES_KEY)
        return sum(int(n) for n in pipe.execute())

    # -- org patches: members stashed by an org event, patched from one Clerk read ----------

    def org_patches(self) -> list[tuple[str, str]]:
        """Pending patches as (kind, id): 'o' org updated, 'x' org deleted, 'r' the role patch (id `ROLE_PATCH_TAG`)."""
        entries = self._redis.smembers(contract.ORG_PATCHES_KEY)
        decoded = sorted(_text(e) for e in entries)
        return [(entry[0], entry[2:]) for entry in decoded]

    def patch_members(self, org_id: str, count: int) -> list[str]:
        """Up to ``count`` users waiting for this org's patch (they stay listed until `finish_patch`)."""
        members = self._redis.srandmember(contract.org_patch_key(org_id), count) or []
        return [_text(m) for m in members]  # type: ignore[arg-type]

    def acquire_patch_many(
        self, requests: Sequence[tuple[str, str]], lease_ms: int
    ) -> list[tuple[Acquired, Stash | None]]:
        """For each (user id, token), in one round trip: take (over) the lease unless a value is cached,
        and read the user's stash in the same step (HIT or LEASE, with the stash or None)."""
        calls = [acquire_patch_call(user_id, token, lease_ms) for user_id, token in requests]
        return [decode_patch_acquired(reply) for reply in self._pipeline(calls)]

    def finish_patch(self, org_id: str, outcomes: Sequence[PatchOutcome]) -> None:
        """Settle patched users as `PatchOutcome` says; see cache/lua/finish_patch.lua."""
        if outcomes:
            self._io.do(finish_patch_call(org_id, outcomes))

    def finish_org_patch(self, kind: str, org_id: str) -> None:
        self._io.do(finish_org_patch_call(kind, org_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
