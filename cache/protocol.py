"""The freshness protocol, as Lua scripts run atomically inside Redis: their calls as data.

Every script call is built here (a `cache.effects.RunScript` per call, decoded by the
function next to it), so the rules live in one place; nothing here does I/O or imports a
runner. The caches run these calls through their runner (`cache.io`, `cache.aio.io`),
the intake and the CLI run `record_program`, and the worker's store (`worker.store`) runs the
drain, pending and patch calls. The scripts themselves are plain files in ``cache/lua/``
(shipped as package data), each with a header documenting its KEYS, ARGV and reply, so
a TypeScript (or any) client can run the very same files:

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

import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.exceptions import ResponseError

from cache import contract
from cache.config import MAX_NEAR_CACHE_LEASE_MS
from cache.durability import ReplicaWait
from cache.effects import Program, RedisCommand, RedisPipeline, RunScript, SentinelView, Sleep
from cache.errors import NotReplicated

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

    kind: str  # 'u' user, 'd' deleted user, 'o' org updated, 'x' org deleted, 'm' org members re-read,
    # 'r' role changed, 'R' any role may have changed (an event naming a role or permission by id only)
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


def repatch_role(role_key: object) -> Target:
    return Target("r", contract.check_role_key(role_key))


ANY_ROLE = Target("R", "*")  # every indexed role: for role.deleted and permission events, which name ids only


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
    role_keys: tuple[str, ...] = ()  # the roles in the value, indexed so a role event finds the user


@dataclass(frozen=True, slots=True)
class Stash:
    """A member's value moved aside by an org event, waiting for the worker's patch."""

    org_id: str
    value: str
    expire_at_ms: int  # absolute (Unix ms, the server's clock): the patched value expires then too
    raw: str


class PatchAction(Enum):
    """What `finish_patch_call` does with a user (the values are finish_patch.lua's)."""

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


# -- the script calls, as data (run by `cache.io` or `cache.aio.io`) ----------------------


def acquire_call(user_id: str, token: str, lease_ms: int, take_over: bool = False) -> RunScript:
    """ACQUIRE: (HIT, value), (LEASE, token) or (WAIT,); ``take_over`` never answers WAIT."""
    if not 0 < lease_ms <= MAX_LEASE_MS:
        raise ValueError(f"lease_ms must be in 1..{MAX_LEASE_MS}")
    keys = (contract.user_orgs_key(user_id), contract.lease_key(user_id), contract.CHANGE_SEQ_KEY)
    return RunScript("acquire", keys, (token, lease_ms, "1" if take_over else "0"))


def decode_acquired(reply: Any) -> tuple[Acquired, Any]:
    return Acquired(int(reply[0])), (reply[1] if len(reply) > 1 else None)


def fill_call(fill: Fill, ttl_s: int) -> RunScript:
    """FILL: store only if the token still holds the lease and none of the value's orgs, nor any role, changed since."""
    orgs = list(dict.fromkeys(fill.org_ids))
    roles = list(dict.fromkeys(fill.role_keys))
    keys = [
        contract.user_orgs_key(fill.user_id),
        contract.lease_key(fill.user_id),
        contract.ROLES_CHANGED_KEY,
        contract.ROLES_INDEXED_KEY,
    ]
    keys += [contract.org_index_key(org_id) for org_id in orgs]
    keys += [contract.org_changed_key(org_id) for org_id in orgs]
    keys += [contract.role_index_key(role) for role in roles]
    expire_at = "" if fill.expire_at_ms is None else fill.expire_at_ms
    args = (fill.token, fill.value, ttl_s * 1000, fill.user_id, expire_at, len(orgs), *roles)
    return RunScript("fill", tuple(keys), args)


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


def forget_call(svix_id: str) -> RedisCommand:
    """Undo the bookkeeping of a `record_program` whose drain job could not be enqueued.

    The invalidation stays (it is idempotent); forgetting the message id lets Svix's
    retry go through the whole path again, and dropping the marker lets it enqueue the
    drain job.
    """
    return RedisCommand(("DEL", contract.seen_event_key(contract.check_svix_id(svix_id)), contract.DRAIN_SCHEDULED_KEY))


# -- the worker's calls (run by `worker.store`) ---------------------------------------------------


def recover_drains_call() -> RunScript:
    """RECOVER_DRAINS: put the users of drain jobs whose lease expired back in the pending set."""
    keys = (contract.DRAINS_KEY, contract.PENDING_REFRESH_KEY)
    return RunScript("recover_drains", keys, (contract.DRAIN_LEASE_PREFIX, contract.REFRESHING_PREFIX))


def decode_drain_recovery(reply: Any) -> DrainRecovery:
    recovered, users, alive = reply
    return DrainRecovery(int(recovered), int(users), int(alive))


def take_pending_call(count: int, drain_id: str) -> RunScript:
    """TAKE_PENDING: pop up to ``count`` users waiting for a refresh into the drain job's own set."""
    keys = (contract.PENDING_REFRESH_KEY, contract.refreshing_key(drain_id), contract.DRAINS_KEY)
    return RunScript("take_pending", keys, (count, drain_id))


def acquire_patch_call(user_id: str, token: str, lease_ms: int) -> RunScript:
    """ACQUIRE_PATCH: take (over) the lease unless a value is cached, and read the user's stash in the same step."""
    if not 0 < lease_ms <= MAX_LEASE_MS:
        raise ValueError(f"lease_ms must be in 1..{MAX_LEASE_MS}")
    keys = (
        contract.user_orgs_key(user_id),
        contract.lease_key(user_id),
        contract.CHANGE_SEQ_KEY,
        contract.stash_key(user_id),
    )
    return RunScript("acquire_patch", keys, (token, lease_ms))


def decode_patch_acquired(reply: Any) -> tuple[Acquired, Stash | None]:
    """HIT or LEASE, with the user's stash (None if there is none)."""
    state, raw, expire_at = reply
    stash = None
    if raw is not None and int(expire_at) > 0:
        text = _text(raw)
        org_id, _, value = text.partition(" ")
        stash = Stash(org_id, value, int(expire_at), text)
    return Acquired(int(state)), stash


def finish_patch_call(org_id: str, outcomes: Sequence[PatchOutcome]) -> RunScript:
    """FINISH_PATCH: settle patched users as each `PatchOutcome` says; see cache/lua/finish_patch.lua."""
    args: list[str] = [contract.STASH_PREFIX]
    for outcome in outcomes:
        args += [outcome.user_id, outcome.stash.raw if outcome.stash else "", outcome.action.value]
    return RunScript("finish_patch", (contract.org_patch_key(org_id), contract.PENDING_REFRESH_KEY), tuple(args))


def finish_org_patch_call(kind: str, org_id: str) -> RunScript:
    """FINISH_ORG_PATCH: the org's patch is over (kind 'o' updated, 'x' deleted)."""
    keys = (contract.ORG_PATCHES_KEY, contract.org_patch_key(org_id))
    return RunScript("finish_org_patch", keys, (f"{kind}:{org_id}",))


class ScriptSupport:
    """What a server turned out to accept, learnt on first use and kept for the client's life."""

    def __init__(self) -> None:
        self.shebang_refused = False  # the server refuses `#!lua flags=` (Redis < 7, some managed services)


def _prime_program(durable: ReplicaWait) -> Program[None]:
    """Before the first write: how many replicas the primary lists, the first WAIT's guess."""
    if durable.needs_prime:
        durable.learn((yield RedisCommand(("INFO", "replication"))))


def _checked_program(durable: ReplicaWait, replies: list[Any]) -> Program[None]:
    """Raise NotReplicated unless the write's pipeline (``replies``) reached every replica it must: under
    Sentinel as the sentinels see the topology right after it."""
    views = (yield SentinelView()) if durable.needs_view else None
    durable.check(replies, views)


def record_program(
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
        contract.ROLES_CHANGED_KEY,
        contract.ROLES_INDEXED_KEY,
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
        contract.ROLE_INDEX_PREFIX,
        contract.ROLE_PATCH_TAG,
    ]
    args += [target.encode() for target in targets]
    durable = durable if durable is not None and durable.active else None
    if durable is not None:
        yield from _prime_program(durable)
    first: Any = None  # the first run's reply, once its failed check made the record run again
    while True:
        call = RunScript("record", tuple(keys), tuple(args), unflagged=support.shebang_refused)
        try:
            if durable is None:
                reply = yield call
            else:
                replies = yield RedisPipeline((call, *durable.commands()))
                try:
                    yield from _checked_program(durable, replies)
                except NotReplicated:
                    if first is not None:
                        raise
                    # Sent once more at once, before a 503: its WAIT may not have waited for every replica now
                    # required (the count grew: one came back), or a replica's acknowledgement may have trailed
                    # the offset checked (another client's write landed just before). Sent again, the record is
                    # a duplicate that still writes, and its WAIT, for them all, covers both runs.
                    first = replies[0]
                    continue
                reply = first if first is not None else replies[0]
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the near-cache's control plane (cache/near.py; cache/lua/near_*.lua) ----------------------------

NEAR_LISTING_GRACE_MS = 2_000  # near_publish.lua lists registrations lapsed by less (a Redis clock step)
NEAR_FORGET_MS = 60_000  # a registration lapsed this long (by Redis's clock) is removed
NEAR_ACK_TTL_S = 60  # an acknowledgement list outlives any wait for it


def near_margin_s(lease_ms: int) -> float:
    """The margin for clock-rate drift on each side of a lease of ``lease_ms``: a twentieth of it, at least 25 ms.

    A near-cache stops serving at ``sent + L - margin`` by its clock; whoever revoked waits until
    ``reply + L + margin`` by its own. Both count from instants on the same side of the renewal's
    execution, so the only thing the margin has to absorb is the two clocks running at different
    rates: with a twentieth, up to (L + m) / (L - m) - 1 = 10.5 % over one lease, where real clocks
    (NTP-slewed, at most 500 ppm) differ by 0.1 %.
    """
    return max(lease_ms / 20, 25.0) / 1000


_NEAR_KEYS = (contract.NEAR_CACHES_KEY, contract.NEAR_SEQ_KEY, contract.NEAR_LEASE_MS_KEY, contract.NEAR_BORN_KEY)


def near_register_call(near_id: str, lease_ms: int, previous_id: str | None = None, *, renew: bool) -> RunScript:
    keys = _NEAR_KEYS
    mode = "renew" if renew else "new"
    return RunScript("near_register", keys, (near_id, lease_ms, mode, previous_id or ""))


def near_register_program(
    near_id: str,
    lease_ms: int,
    previous_id: str | None = None,
    *,
    renew: bool,
    durable: ReplicaWait | None = None,
) -> Program[int]:
    """Register or renew ``near_id``; returns its count of invalidations, or -1 if a renewal was refused.

    With ``durable``, WAIT follows on the same connection, as after a record: a failover must not lose a
    registration the process serves under. Raises RedisError or NotReplicated: the caller empties its tier.
    """
    call = near_register_call(near_id, lease_ms, previous_id, renew=renew)
    durable = durable if durable is not None and durable.active else None
    if durable is None:
        reply = yield call
    else:
        yield from _prime_program(durable)
        replies = yield RedisPipeline((call, *durable.commands()))
        yield from _checked_program(durable, replies)
        reply = replies[0]
    return int(reply[1])


def near_get_call(user_id: str) -> RunScript:
    """NEAR_GET: the value and its PTTL at one instant."""
    return RunScript("near_get", (contract.user_orgs_key(user_id),), ())


def decode_near_get(reply: Any) -> tuple[Any, int]:
    return reply[0], int(reply[1])


def near_payload(targets: Sequence[Target]) -> str:
    """What a near-cache drops for ``targets``: its users, or ``"*"`` (everything) for any org, role or
    permission target, whose members only Redis's indexes know."""
    users = []
    for target in targets:
        if target.kind not in ("u", "d"):
            return '"*"'
        users.append(contract.check_user_id(target.id))
    return json.dumps(sorted(set(users)))


def near_publish_call(token: str, payload: str, *, stamp: bool = False) -> RunScript:
    """NEAR_PUBLISH; ``stamp``: stamp ``near-born`` if it is missing (see `NearRegistry`)."""
    keys = _NEAR_KEYS
    args = (contract.NEAR_INVAL_PREFIX, token, NEAR_LISTING_GRACE_MS, NEAR_FORGET_MS, payload, "1" if stamp else "0")
    return RunScript("near_publish", keys, args)


@dataclass(frozen=True, slots=True)
class NearOutcome:
    """How the near-caches took one invalidation: acknowledged, or waited out (their leases ran out)."""

    listed: int
    acked: int
    lapsed: int
    ack_seconds: tuple[float, ...]  # per acknowledgement, from the publish's reply
    lapse_wait_s: float  # how long the wait ran on for processes that never acknowledged (0 if none)


class NearRegistry:
    """What one revoker (an intake worker, a cache's `invalidate`) saw of the registry, across its calls.

    If Redis loses its data (a restart without persistence, a FLUSHALL, a failover to a replica without
    the registrations) while app processes run, the registry is empty but they may still serve under
    leases it no longer lists. The first registration of a data set stamps ``near-born``; a revoker that
    saw one stamp and then another, or none, waits out the longest lease before it answers. A revoker that
    has seen a stamp also stamps a data set that has none when it publishes (and waits, as above): else,
    having found none once, it would find none again after a process registered and the data was lost a
    second time, and not know.
    """

    def __init__(self) -> None:
        self.born: int | None = None
        self.seen_stamp = False  # this revoker has seen a stamp: near-caches run in this deployment
        self.primed = False

    def prime_program(self) -> Program[None]:
        """Read the stamp once before this revoker's first invalidation, so that it already knows it then."""
        if not self.primed:
            raw = yield RedisCommand(("GET", contract.NEAR_BORN_KEY))
            self.primed = True
            if raw is not None and self.born is None:
                self.born = int(raw)
                self.seen_stamp = True


def near_invalidate_program(
    targets: Sequence[Target], *, block_s: float = 1.0, registry: NearRegistry | None = None
) -> Program[NearOutcome]:
    """Send ``targets``' invalidation to every registered near-cache and wait until each has acknowledged
    it, or until its lease has run out by this clock plus the margin. Only then may the caller answer.

    Run after the record (and its WAIT) succeeded. ``block_s`` bounds each BLPOP, below the client's read
    timeout. Raises RedisError: the caller must not answer 2xx (the record stays; a retry sends again).
    """
    if not targets:
        return NearOutcome(0, 0, 0, (), 0.0)
    if registry is not None:
        yield from registry.prime_program()
    token = new_token()
    reply = yield near_publish_call(token, near_payload(targets), stamp=registry is not None and registry.seen_stamp)
    received = time.monotonic()  # after the publish ran: every listed lease was renewed before this
    _, flat, born = reply[0], reply[1], int(reply[2])
    deadlines: dict[str, float] = {}
    if registry is not None:
        if registry.born is not None and born != registry.born:  # the registrations it listed are gone
            yield from _sleep_until(received + MAX_NEAR_CACHE_LEASE_MS / 1000 + near_margin_s(MAX_NEAR_CACHE_LEASE_MS))
            received = time.monotonic()
        registry.born = born if born >= 0 else None
        registry.seen_stamp = registry.seen_stamp or born >= 0
    for i in range(0, len(flat), 3):
        lease_ms = int(flat[i + 1])
        deadlines[_text(flat[i])] = received + lease_ms / 1000 + near_margin_s(lease_ms)
    listed = len(deadlines)
    if not listed:
        return NearOutcome(0, 0, 0, (), 0.0)
    key = contract.near_ack_key(token)
    acks: list[float] = []
    last_ack = received
    while deadlines:
        now = time.monotonic()
        for near_id in [i for i, deadline in deadlines.items() if deadline <= now]:
            del deadlines[near_id]
        if not deadlines:
            break
        timeout = max(0.01, min(block_s, max(deadlines.values()) - now))  # never 0: BLPOP 0 blocks for ever
        popped = yield RedisCommand(("BLPOP", key, f"{timeout:.3f}"))
        if popped:
            near_id = _text(popped[1])
            if deadlines.pop(near_id, None) is not None:
                last_ack = time.monotonic()
                acks.append(last_ack - received)
    lapsed = listed - len(acks)
    yield RedisCommand(("DEL", key))
    if lapsed:
        log.warning("%d near-cache(s) did not acknowledge an invalidation; their leases were waited out", lapsed)
    return NearOutcome(listed, len(acks), lapsed, tuple(acks), time.monotonic() - last_ack if lapsed else 0.0)


def _sleep_until(deadline: float) -> Program[None]:
    while (left := deadline - time.monotonic()) > 0:
        yield Sleep(min(left, 0.5))
