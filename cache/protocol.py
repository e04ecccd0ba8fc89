"""The freshness protocol, as Lua scripts run atomically inside Redis.

This module owns every multi-key write, so the rules live in one place. The scripts
themselves are plain files in ``cache/lua/`` (shipped as package data), each with a
header documenting its KEYS, ARGV and reply, so a TypeScript (or any) client can run
the very same files; this module is the Python side that calls them:

* **Leases on fills** (Facebook's memcache leases): a lookup that misses takes a
  random token in ``user-orgs-lease:<id>`` *before* it calls Clerk. Invalidation
  deletes the lease, and `FILL` (fill.lua) writes only while the caller's token is still there.
  A slow Clerk read that started before an invalidation can therefore never store
  its pre-change answer.
* **Org changes void fills in flight**: a user whose first fill is still running is
  not in ``org-users:<org>`` yet, so an org event cannot reach the lease. Instead it
  stamps ``org-changed:<org>`` with a global change sequence; the lease records the
  sequence at grant time, and `FILL` refuses a value naming an org changed since.
* **Single-flight**: while a lease is held, other misses get ``WAIT`` and poll.
* **Recording an event** (`RECORD`, record.lua): dedupe on the Svix message id, invalidate the
  affected keys, and queue them for refresh, all in one round trip, so revocation
  never waits for a worker.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from cache import contract
from cache.durability import ReplicaWait
from cache.effects import Program, RedisCommand, RedisPipeline, RunScript
from cache.scripts import SCRIPT_NAMES as SCRIPT_NAMES  # re-exported: the files this module runs
from cache.scripts import script_source as script_source
from cache.scripts import without_shebang as without_shebang
from cache.sync_io import SyncIO

log = logging.getLogger(__name__)

SEEN_EVENT_TTL_S = 48 * 3600  # longer than Svix's ~28 h retry schedule
MAX_LEASE_MS = 60_000  # a fill may take at most this long from ACQUIRE to FILL
ORG_CHANGED_MS = 2 * MAX_LEASE_MS  # how long an org change is remembered: longer than any lease
DRAIN_MARKER_TTL_S = 60
DRAIN_LEASE_MS = 2_000  # a drain job's heartbeat lease: its users are recovered this soon after its worker dies
DRAIN_HEARTBEAT_S = 0.5  # if an enqueue is lost, the next event schedules again after this


class Acquired(Enum):
    HIT = 1
    LEASE = 2
    WAIT = 3


@dataclass(frozen=True, slots=True)
class Target:
    """One thing an event invalidates; see cache/lua/record.lua for the kinds."""

    kind: str  # 'u' user, 'd' deleted user, 'o' org updated, 'x' org deleted, 'm' org members re-read
    id: str

    def encode(self) -> str:
        return f"{self.kind}:{self.id}"


def refresh_user(user_id: object) -> Target:
    return Target("u", contract.check_user_id(user_id))


def drop_user(user_id: object) -> Target:
    return Target("d", contract.check_user_id(user_id))


def refresh_org(org_id: object) -> Target:
    return Target("o", contract.check_org_id(org_id))


def reread_org_members(org_id: object) -> Target:
    return Target("m", contract.check_org_id(org_id))


def drop_org(org_id: object) -> Target:
    return Target("x", contract.check_org_id(org_id))


@dataclass(frozen=True, slots=True)
class DrainRecovery:
    jobs: int  # dead drain jobs whose users were put back
    users: int
    alive: int  # drain jobs still renewing their lease


@dataclass(frozen=True, slots=True)
class Recorded:
    duplicate: bool
    invalidated: int
    schedule_drain: bool


def new_token() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Fill:
    """One FILL: store ``value`` for ``user_id`` if ``token`` still holds its lease."""

    user_id: str
    token: str
    value: str
    org_ids: tuple[str, ...]
    expire_at_ms: int | None = None  # None: the cache's TTL after the lease's grant; a patch keeps its stash's


@dataclass(frozen=True, slots=True)
class Stash:
    """A member's value moved aside by an org event, waiting for the worker's patch."""

    org_id: str
    value: str
    expire_at_ms: int  # absolute (Unix ms, the server's clock): the patched value expires then too
    raw: str


class PatchAction(Enum):
    """What `Protocol.finish_patch` does with a user (the values are finish_patch.lua's)."""

    DONE = "done"  # forget the user: patched, already refilled, or no stash left to patch
    REFRESH = "refresh"  # forget the user, and re-read them in full instead
    RETRY = "retry"  # keep the user listed: an event voided this patch, the next pass patches afresh


@dataclass(frozen=True, slots=True)
class PatchOutcome:
    """One user after a patch pass: the stash as it was read (None if none), and what to do next.

    A user whose stash changed since it was read stays listed whatever the action.
    """

    user_id: str
    stash: Stash | None
    action: PatchAction


def _refuses_shebang(exc: ResponseError) -> bool:
    """Redis < 7 fails to compile the shebang line; a server that knows shebangs but not a flag names it."""
    message = str(exc).lower()
    return "near '#'" in message or "shebang" in message or "unexpected flag" in message


# -- the script calls, as data (run by `cache.sync_io` or `cache.aio.io`) ----------------------


def acquire_call(user_id: str, token: str, lease_ms: int, take_over: bool = False) -> RunScript:
    """ACQUIRE: (HIT, value), (LEASE, token) or (WAIT,); ``take_over`` never answers WAIT."""
    if not 0 < lease_ms <= MAX_LEASE_MS:
        raise ValueError(f"lease_ms must be in 1..{MAX_LEASE_MS}")
    keys = (contract.user_orgs_key(user_id), contract.lease_key(user_id), contract.CHANGE_SEQ_KEY)
    return RunScript("acquire", keys, (token, lease_ms, "1" if take_over else "0"))


def decode_acquired(reply: Any) -> tuple[Acquired, Any]:
    return Acquired(int(reply[0])), (reply[1] if len(reply) > 1 else None)


def fill_call(fill: Fill, ttl_s: int) -> RunScript:
    """FILL: store only if the token still holds the lease and none of the value's orgs changed since."""
    orgs = list(dict.fromkeys(fill.org_ids))
    keys = [contract.user_orgs_key(fill.user_id), contract.lease_key(fill.user_id)]
    keys += [contract.org_index_key(org_id) for org_id in orgs]
    keys += [contract.org_changed_key(org_id) for org_id in orgs]
    expire_at = "" if fill.expire_at_ms is None else fill.expire_at_ms
    return RunScript("fill", tuple(keys), (fill.token, fill.value, ttl_s * 1000, fill.user_id, expire_at))


def release_call(user_id: str, token: str) -> RunScript:
    return RunScript("release", (contract.lease_key(user_id),), (token,))


def clerk_budget_call(priority: str, limit: int, window_ms: int, reserve: int) -> RunScript:
    keys = (
        contract.CLERK_BUDGET_KEY,
        contract.CLERK_PAUSED_UNTIL_KEY,
        contract.CLERK_INTERACTIVE_WAITING_KEY,
        contract.CLERK_BUDGET_INTERACTIVE_KEY,
        contract.CLERK_REWARM_NEXT_KEY,
    )
    return RunScript("clerk_budget", keys, (priority, limit, window_ms, reserve, new_token()))


def clerk_pause_call(ms: int) -> RunScript:
    return RunScript("clerk_pause", (contract.CLERK_PAUSED_UNTIL_KEY,), (ms,))


class ScriptSupport:
    """What a server turned out to accept, learnt on first use and kept for the client's life."""

    def __init__(self) -> None:
        self.shebang_refused = False  # the server refuses `#!lua flags=` (Redis < 7, some managed services)


def record(
    targets: Sequence[Target],
    svix_id: str | None = None,
    *,
    durable: ReplicaWait | None = None,
    support: ScriptSupport | None = None,
) -> Program[Recorded]:
    """RECORD: invalidate ``targets`` (deduplicated on ``svix_id`` when given) and queue refreshes.

    With ``durable``, WAIT follows the script on the same connection and too few replica
    acknowledgements raise NotReplicated (the invalidation stands on the primary).
    """
    support = support or ScriptSupport()
    keys = [
        contract.PENDING_REFRESH_KEY,
        contract.DRAIN_SCHEDULED_KEY,
        contract.CHANGE_SEQ_KEY,
        contract.ORG_PATCHES_KEY,
    ]
    if svix_id is not None:
        keys.append(contract.seen_event_key(contract.check_svix_id(svix_id)))
    args: list[str | int] = [
        SEEN_EVENT_TTL_S,
        DRAIN_MARKER_TTL_S,
        contract.USER_ORGS_PREFIX,
        contract.LEASE_PREFIX,
        contract.ORG_INDEX_PREFIX,
        contract.ORG_CHANGED_PREFIX,
        ORG_CHANGED_MS,
        contract.STASH_PREFIX,
        contract.ORG_PATCH_PREFIX,
    ]
    args += [target.encode() for target in targets]
    durable = durable if durable is not None and durable.active else None
    if durable is not None and durable.needs_prime:
        durable.learn((yield RedisCommand(("INFO", "replication"))))
    while True:
        call = RunScript("record", tuple(keys), tuple(args), unflagged=support.shebang_refused)
        try:
            if durable is None:
                reply = yield call
            else:
                replies = yield RedisPipeline((call, *durable.commands()))
                durable.check(replies)
                reply = replies[0]
        except ResponseError as exc:
            if not _refuses_shebang(exc) or support.shebang_refused:
                raise
            support.shebang_refused = True
            log.warning(
                "Redis refused the record script's shebang flags (%s); running it without them: a full Redis "
                "(maxmemory reached) now refuses revocations instead of applying them",
                str(exc)[:120],
            )
            continue
        recorded, invalidated, schedule = reply
        return Recorded(duplicate=not recorded, invalidated=int(invalidated), schedule_drain=bool(schedule))


class Protocol:
    """The scripts over one blocking Redis client (each loads once, then runs by SHA).

    The ``*_many`` forms send one call per user in a single pipelined round trip.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._io = SyncIO(redis)
        self.support = ScriptSupport()

    def _run(self, call: RunScript) -> Any:
        return self._io.do(call)

    def _pipeline(self, calls: Sequence[RunScript]) -> list[Any]:
        return self._io.pipeline(RedisPipeline(tuple(calls)))

    def acquire(self, user_id: str, token: str, lease_ms: int) -> tuple[Acquired, Any]:
        """Return (HIT, raw value), (LEASE, token) or (WAIT, None) in one round trip."""
        return decode_acquired(self._run(acquire_call(user_id, token, lease_ms)))

    def acquire_many(
        self, requests: Sequence[tuple[str, str]], lease_ms: int, *, take_over: bool = False
    ) -> list[tuple[Acquired, Any]]:
        """`acquire` for each (user id, token), in one round trip; ``take_over`` never answers WAIT."""
        calls = [acquire_call(user_id, token, lease_ms, take_over) for user_id, token in requests]
        return [decode_acquired(reply) for reply in self._pipeline(calls)]

    def fill(self, fill: Fill, ttl_s: int) -> bool:
        """Store only if the token still holds the lease and none of the value's orgs changed since."""
        return bool(self._run(fill_call(fill, ttl_s)))

    def fill_many(self, fills: Sequence[Fill], ttl_s: int) -> list[bool]:
        """`fill` for each, in one round trip (``ttl_s`` unless a Fill names its own lifetime)."""
        return [bool(reply) for reply in self._pipeline([fill_call(fill, ttl_s) for fill in fills])]

    def release(self, user_id: str, token: str) -> None:
        """Give a lease back (after a failed Clerk call) so waiters need not wait it out."""
        self._run(release_call(user_id, token))

    def record(
        self, targets: Sequence[Target], svix_id: str | None = None, *, durable: ReplicaWait | None = None
    ) -> Recorded:
        """Run `record` (the module's program) on this client."""
        return self._io.run(record(targets, svix_id, durable=durable, support=self.support))

    def forget(self, svix_id: str) -> None:
        """Undo the bookkeeping of a `record` whose drain job could not be enqueued.

        The invalidation stays (it is idempotent); forgetting the message id lets
        Svix's retry go through the whole path again, and dropping the marker lets
        it enqueue the drain job.
        """
        self._redis.delete(contract.seen_event_key(contract.check_svix_id(svix_id)), contract.DRAIN_SCHEDULED_KEY)

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
        recovered, users, alive = self._run(
            RunScript(
                "recover_drains",
                (contract.DRAINS_KEY, contract.PENDING_REFRESH_KEY),
                (contract.DRAIN_LEASE_PREFIX, contract.REFRESHING_PREFIX),
            )
        )
        return DrainRecovery(int(recovered), int(users), int(alive))

    def drain_alive(self, drain_id: str) -> bool:
        return bool(self._redis.exists(contract.drain_lease_key(drain_id)))

    def take_pending(self, count: int, drain_id: str) -> list[str]:
        """Pop up to ``count`` users waiting for a refresh into the job's own set; call `done` for them."""
        keys = (contract.PENDING_REFRESH_KEY, contract.refreshing_key(drain_id), contract.DRAINS_KEY)
        taken = self._run(RunScript("take_pending", keys, (count, drain_id)))
        return [_text(u) for u in taken]

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

    # -- the fleet's Clerk budget (see cache/budget.py) ---------------------------------------

    def take_clerk_budget(self, priority: str, limit: int, window_ms: int, reserve: int) -> tuple[bool, int]:
        """One slot of Clerk budget for priority 'i' or 'r': (granted, ms to wait before asking again)."""
        granted, wait_ms = self._run(clerk_budget_call(priority, limit, window_ms, reserve))
        return bool(granted), int(wait_ms)

    def pause_clerk(self, ms: int) -> None:
        """Nobody calls Clerk for ``ms`` (after a 429): extends the fleet's pause, never shortens it."""
        self._run(clerk_pause_call(ms))

    # -- org patches: members stashed by an org event, patched from one Clerk read --------

    def org_patches(self) -> list[tuple[str, str]]:
        """Pending org patches as (kind, org id): kind 'o' updated, 'x' deleted."""
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
        if not 0 < lease_ms <= MAX_LEASE_MS:
            raise ValueError(f"lease_ms must be in 1..{MAX_LEASE_MS}")
        calls = [
            RunScript(
                "acquire_patch",
                (
                    contract.user_orgs_key(user_id),
                    contract.lease_key(user_id),
                    contract.CHANGE_SEQ_KEY,
                    contract.stash_key(user_id),
                ),
                (token, lease_ms),
            )
            for user_id, token in requests
        ]
        out: list[tuple[Acquired, Stash | None]] = []
        for state, raw, expire_at in self._pipeline(calls):
            stash = None
            if raw is not None and int(expire_at) > 0:
                text = _text(raw)
                org_id, _, value = text.partition(" ")
                stash = Stash(org_id, value, int(expire_at), text)
            out.append((Acquired(int(state)), stash))
        return out

    def finish_patch(self, org_id: str, outcomes: Sequence[PatchOutcome]) -> None:
        """Settle patched users as `PatchOutcome` says; see cache/lua/finish_patch.lua."""
        if not outcomes:
            return
        args: list[str] = [contract.STASH_PREFIX]
        for outcome in outcomes:
            args += [outcome.user_id, outcome.stash.raw if outcome.stash else "", outcome.action.value]
        self._run(
            RunScript("finish_patch", (contract.org_patch_key(org_id), contract.PENDING_REFRESH_KEY), tuple(args))
        )

    def finish_org_patch(self, kind: str, org_id: str) -> None:
        self._run(
            RunScript(
                "finish_org_patch",
                (contract.ORG_PATCHES_KEY, contract.org_patch_key(org_id)),
                (f"{kind}:{org_id}",),
            )
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
