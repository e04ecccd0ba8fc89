"""The freshness protocol, as Lua scripts run atomically inside Redis.

This module owns every multi-key write, so the rules live in one place and a
TypeScript (or any) client can run the very same scripts:

* **Leases on fills** (Facebook's memcache leases): a lookup that misses takes a
  random token in ``user-orgs-lease:<id>`` *before* it calls Clerk. Invalidation
  deletes the lease, and `FILL` writes only while the caller's token is still there.
  A slow Clerk read that started before an invalidation can therefore never store
  its pre-change answer.
* **Org changes void fills in flight**: a user whose first fill is still running is
  not in ``org-users:<org>`` yet, so an org event cannot reach the lease. Instead it
  stamps ``org-changed:<org>`` with a global change sequence; the lease records the
  sequence at grant time, and `FILL` refuses a value naming an org changed since.
* **Single-flight**: while a lease is held, other misses get ``WAIT`` and poll.
* **Recording an event** (`RECORD`): dedupe on the Svix message id, invalidate the
  affected keys, and queue them for refresh, all in one round trip, so revocation
  never waits for a worker.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis import Redis
from redis.client import Pipeline

from cache import contract

ACQUIRE_LUA = """
-- KEYS[1] user-orgs:<id>   KEYS[2] user-orgs-lease:<id>   KEYS[3] change sequence
-- ARGV[1] new random token ARGV[2] lease lifetime in ms
-- ARGV[3] '1' to take the lease even from another caller (the worker: the holder may have died;
--         a live holder's fill is then refused, and waiters get the worker's fill instead)
-- -> {1, value} hit | {2, token} lease granted | {3} another caller is filling
-- The lease remembers the change sequence at grant time, so FILL can tell whether an
-- organization changed after the Clerk read began (see RECORD's 'o'/'x').
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
local seq = redis.call('GET', KEYS[3]) or '0'
local lease = ARGV[1] .. ' ' .. seq
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], lease, 'PX', ARGV[2])
  return {2, ARGV[1]}
end
if redis.call('SET', KEYS[2], lease, 'NX', 'PX', ARGV[2]) then return {2, ARGV[1]} end
return {3}
"""

FILL_LUA = """
-- KEYS[1] user-orgs:<id>   KEYS[2] user-orgs-lease:<id>
-- KEYS[3 .. 2+n] org-users:<orgId>, then KEYS[3+n .. 2+2n] org-changed:<orgId>, for the n orgs in the value
-- ARGV[1] token from ACQUIRE   ARGV[2] JSON value   ARGV[3] TTL in ms   ARGV[4] user id
-- -> 1 stored | 0 refused: an invalidation voided the lease, or one of the orgs changed since it was granted
local lease = redis.call('GET', KEYS[2])
if not lease then return 0 end
local sep = string.find(lease, ' ', 1, true)
if string.sub(lease, 1, sep - 1) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local granted_at = tonumber(string.sub(lease, sep + 1))
local n = (#KEYS - 2) / 2
for i = 3 + n, 2 + 2 * n do
  local changed = redis.call('GET', KEYS[i])
  if changed and tonumber(changed) > granted_at then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
-- the org index must outlive every value it points at, whatever TTL other writers use
local index_ttl = math.floor((tonumber(ARGV[3]) + 999) / 1000) + 60
for i = 3, 2 + n do
  redis.call('SADD', KEYS[i], ARGV[4])
  if redis.call('TTL', KEYS[i]) < index_ttl then redis.call('EXPIRE', KEYS[i], index_ttl) end
end
return 1
"""

RELEASE_LUA = """
-- KEYS[1] user-orgs-lease:<id>   ARGV[1] token: give a lease back after a failed Clerk call
local lease = redis.call('GET', KEYS[1])
if lease and string.sub(lease, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then return redis.call('DEL', KEYS[1]) end
return 0
"""

RECORD_LUA = """#!lua flags=allow-oom
-- allow-oom: a full Redis must still accept revocations (the writes below are tiny).
-- KEYS[1] pending-refresh set   KEYS[2] drain-scheduled marker   KEYS[3] change sequence
-- KEYS[4] org-patches set       KEYS[5] (optional) seen-event key
-- ARGV[1] seen TTL s   ARGV[2] marker TTL s   ARGV[3] value prefix   ARGV[4] lease prefix
-- ARGV[5] org index prefix   ARGV[6] org-changed prefix   ARGV[7] org-changed lifetime ms (> any lease)
-- ARGV[8] stash prefix       ARGV[9] org-patch prefix
-- ARGV[10..] targets:
--   'u:<userId>' invalidate, refresh later if it was cached      'd:<userId>' invalidate, never refresh
--   'o:<orgId>'  org updated: move every cached member's value aside (a stash, never served) for the
--                worker to patch from one Clerk read; void every fill in flight that read the org
--   'x:<orgId>'  org deleted: same, the patch drops the org; then drop the index
--   'm:<orgId>'  re-read every cached member in full (a membership event naming no user, an operator's
--                invalidate-org): 'u:' for each, and void fills in flight that read the org
-- -> {1 recorded | 0 duplicate, keys invalidated, 1 if the caller must enqueue a drain job}
local recorded = 1
if #KEYS >= 5 and not redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[1]) then recorded = 0 end
local invalidated = 0
local function invalidate(uid, refresh)
  local existed = redis.call('DEL', ARGV[3] .. uid, ARGV[8] .. uid)
  redis.call('DEL', ARGV[4] .. uid)
  invalidated = invalidated + existed
  if refresh and existed > 0 then redis.call('SADD', KEYS[1], uid) end
end
local function stash(uid, org)
  redis.call('DEL', ARGV[4] .. uid)
  local value = redis.call('GET', ARGV[3] .. uid)
  if value then
    local ttl = redis.call('PTTL', ARGV[3] .. uid)
    redis.call('DEL', ARGV[3] .. uid)
    invalidated = invalidated + 1
    if ttl > 0 then
      redis.call('SET', ARGV[8] .. uid, org .. ' ' .. value, 'PX', ttl)
      redis.call('SADD', ARGV[9] .. org, uid)
    else
      redis.call('SADD', KEYS[1], uid)  -- a value written without a TTL: refresh in full
    end
    return
  end
  -- already stashed: for this org the patch will read Clerk afresh; for another org the stash
  -- misses this change, so it is dropped and the user refreshed in full instead
  local stashed = redis.call('GET', ARGV[8] .. uid)
  if stashed then
    if string.sub(stashed, 1, #org + 1) == org .. ' ' then
      redis.call('SADD', ARGV[9] .. org, uid)
    else
      redis.call('DEL', ARGV[8] .. uid)
      redis.call('SADD', KEYS[1], uid)
    end
  end
end
if recorded == 1 then
  for i = 10, #ARGV do
    local kind, id = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 3)
    if kind == 'u' then
      invalidate(id, true)
    elseif kind == 'd' then
      invalidate(id, false)
      redis.call('SREM', KEYS[1], id)
    else
      -- a user whose fill is in flight is not in the index yet: mark the org changed instead
      redis.call('SET', ARGV[6] .. id, redis.call('INCR', KEYS[3]), 'PX', ARGV[7])
      local index = ARGV[5] .. id
      if kind == 'm' then
        for _, uid in ipairs(redis.call('SMEMBERS', index)) do invalidate(uid, true) end
      else
        for _, uid in ipairs(redis.call('SMEMBERS', index)) do stash(uid, id) end
        if redis.call('EXISTS', ARGV[9] .. id) == 1 then redis.call('SADD', KEYS[4], ARGV[i]) end
        if kind == 'x' then redis.call('DEL', index) end
      end
    end
  end
end
-- decided for duplicates too: a retried call must still get the job enqueued
local schedule = 0
if redis.call('SCARD', KEYS[1]) + redis.call('SCARD', KEYS[4]) > 0
    and redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  schedule = 1
end
return {recorded, invalidated, schedule}
"""

TAKE_PENDING_LUA = """
-- KEYS[1] pending-refresh set   KEYS[2] refreshing set   ARGV[1] count
-- Pop users to refresh, remembering them until done, so a worker killed mid-job loses none.
local users = redis.call('SPOP', KEYS[1], ARGV[1])
if #users > 0 then redis.call('SADD', KEYS[2], unpack(users)) end
return users
"""

FINISH_PATCH_LUA = """
-- KEYS[1] org-patch:<orgId> set   KEYS[2] pending-refresh set
-- ARGV[1] stash prefix, then per user three values: user id, the stash as read ('' if none), action
--   'done'    forget the user (patched, already refilled, or no stash left to patch)
--   'refresh' forget the user, and re-read them in full instead
--   'retry'   keep the user listed: an event voided this patch, the next pass patches afresh
-- A user whose stash changed since it was read (a newer event re-stashed them) stays listed.
for i = 2, #ARGV, 3 do
  local uid, seen, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = ARGV[1] .. uid
  local current = redis.call('GET', key) or ''
  if action ~= 'retry' and current == seen then
    if seen ~= '' then redis.call('DEL', key) end
    redis.call('SREM', KEYS[1], uid)
    if action == 'refresh' then redis.call('SADD', KEYS[2], uid) end
  end
end
return 1
"""

FINISH_ORG_PATCH_LUA = """
-- KEYS[1] org-patches set   KEYS[2] org-patch:<orgId> set   ARGV[1] the org-patches entry
-- Forget the entry only once no user waits for that org's patch (RECORD may have added more).
if redis.call('SCARD', KEYS[2]) == 0 then return redis.call('SREM', KEYS[1], ARGV[1]) end
return 0
"""

SEEN_EVENT_TTL_S = 48 * 3600  # longer than Svix's ~28 h retry schedule
MAX_LEASE_MS = 60_000  # a fill may take at most this long from ACQUIRE to FILL
ORG_CHANGED_MS = 2 * MAX_LEASE_MS  # how long an org change is remembered: longer than any lease
DRAIN_MARKER_TTL_S = 60  # if an enqueue is lost, the next event schedules again after this


class Acquired(Enum):
    HIT = 1
    LEASE = 2
    WAIT = 3


@dataclass(frozen=True, slots=True)
class Target:
    """One thing an event invalidates; see RECORD_LUA for the kinds."""

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
    ttl_ms: int | None = None  # None: the cache's TTL; a patch keeps its stash's remaining lifetime


@dataclass(frozen=True, slots=True)
class Stash:
    """A member's value moved aside by an org event, waiting for the worker's patch."""

    org_id: str
    value: str
    ttl_ms: int
    raw: str


class Protocol:
    """The scripts, registered on one Redis client (they load once, then run by SHA).

    The ``*_many`` forms send one call per user in a single pipelined round trip.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._fill = redis.register_script(FILL_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._record = redis.register_script(RECORD_LUA)
        self._take_pending = redis.register_script(TAKE_PENDING_LUA)
        self._finish_org_patch = redis.register_script(FINISH_ORG_PATCH_LUA)
        self._finish_patch = redis.register_script(FINISH_PATCH_LUA)

    def acquire(self, user_id: str, token: str, lease_ms: int) -> tuple[Acquired, Any]:
        """Return (HIT, raw value), (LEASE, token) or (WAIT, None) in one round trip."""
        return _acquired(self._call_acquire(self._redis, user_id, token, lease_ms))

    def acquire_many(
        self, requests: Sequence[tuple[str, str]], lease_ms: int, *, take_over: bool = False
    ) -> list[tuple[Acquired, Any]]:
        """`acquire` for each (user id, token), in one round trip; ``take_over`` never answers WAIT."""
        pipe = self._redis.pipeline(transaction=False)
        for user_id, token in requests:
            self._call_acquire(pipe, user_id, token, lease_ms, take_over)
        return [_acquired(reply) for reply in pipe.execute()]

    def fill(self, fill: Fill, ttl_s: int) -> bool:
        """Store only if the token still holds the lease and none of the value's orgs changed since."""
        return bool(self._call_fill(self._redis, fill, ttl_s))

    def fill_many(self, fills: Sequence[Fill], ttl_s: int) -> list[bool]:
        """`fill` for each, in one round trip (``ttl_s`` unless a Fill names its own lifetime)."""
        pipe = self._redis.pipeline(transaction=False)
        for fill in fills:
            self._call_fill(pipe, fill, ttl_s)
        return [bool(reply) for reply in pipe.execute()]

    def release(self, user_id: str, token: str) -> None:
        """Give a lease back (after a failed Clerk call) so waiters need not wait it out."""
        self._release(keys=[contract.lease_key(user_id)], args=[token])

    def _call_acquire(
        self, client: Redis | Pipeline, user_id: str, token: str, lease_ms: int, take_over: bool = False
    ) -> Any:
        if not 0 < lease_ms <= MAX_LEASE_MS:
            raise ValueError(f"lease_ms must be in 1..{MAX_LEASE_MS}")
        keys = [contract.user_orgs_key(user_id), contract.lease_key(user_id), contract.CHANGE_SEQ_KEY]
        return self._acquire(keys=keys, args=[token, lease_ms, "1" if take_over else "0"], client=client)

    def _call_fill(self, client: Redis | Pipeline, fill: Fill, ttl_s: int) -> Any:
        orgs = list(dict.fromkeys(fill.org_ids))
        keys = [contract.user_orgs_key(fill.user_id), contract.lease_key(fill.user_id)]
        keys += [contract.org_index_key(org_id) for org_id in orgs]
        keys += [contract.org_changed_key(org_id) for org_id in orgs]
        ttl_ms = fill.ttl_ms if fill.ttl_ms is not None else ttl_s * 1000
        return self._fill(keys=keys, args=[fill.token, fill.value, ttl_ms, fill.user_id], client=client)

    def record(self, targets: Sequence[Target], svix_id: str | None = None) -> Recorded:
        """Invalidate ``targets`` (deduplicated on ``svix_id`` when given) and queue refreshes."""
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
        recorded, invalidated, schedule = self._record(keys=keys, args=args)
        return Recorded(duplicate=not recorded, invalidated=int(invalidated), schedule_drain=bool(schedule))

    def forget(self, svix_id: str) -> None:
        """Undo the bookkeeping of a `record` whose drain job could not be enqueued.

        The invalidation stays (it is idempotent); forgetting the message id lets
        Svix's retry go through the whole path again, and dropping the marker lets
        it enqueue the drain job.
        """
        self._redis.delete(contract.seen_event_key(contract.check_svix_id(svix_id)), contract.DRAIN_SCHEDULED_KEY)

    def start_drain(self) -> None:
        """Called first by a drain job: events from now on enqueue another job, and users a
        killed job had taken are pending again (a concurrent job may refresh some twice)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(contract.DRAIN_SCHEDULED_KEY)
        pipe.sunionstore(contract.PENDING_REFRESH_KEY, [contract.PENDING_REFRESH_KEY, contract.REFRESHING_KEY])
        pipe.delete(contract.REFRESHING_KEY)
        pipe.execute()

    def take_pending(self, count: int) -> list[str]:
        """Pop up to ``count`` users waiting for a refresh; call `done` for them afterwards."""
        taken = self._take_pending(keys=[contract.PENDING_REFRESH_KEY, contract.REFRESHING_KEY], args=[count])
        return [_text(u) for u in taken]

    def done(self, refreshed: Sequence[str], retry: Sequence[str] = ()) -> None:
        """Finish taken users: forget ``refreshed``, put ``retry`` back in the pending set."""
        pipe = self._redis.pipeline(transaction=True)
        if retry:
            pipe.sadd(contract.PENDING_REFRESH_KEY, *retry)
        if refreshed or retry:
            pipe.srem(contract.REFRESHING_KEY, *refreshed, *retry)
        pipe.execute()

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

    def stashes(self, user_ids: Sequence[str]) -> list[Stash | None]:
        """Each user's stash with its remaining lifetime, or None (absent, or about to expire)."""
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.get(contract.stash_key(user_id))
            pipe.pttl(contract.stash_key(user_id))
        replies = pipe.execute()
        out: list[Stash | None] = []
        for raw, ttl_ms in zip(replies[0::2], replies[1::2], strict=True):
            if raw is None or ttl_ms <= 0:
                out.append(None)
                continue
            text = _text(raw)
            org_id, _, value = text.partition(" ")
            out.append(Stash(org_id, value, int(ttl_ms), text))
        return out

    def finish_patch(self, org_id: str, actions: Sequence[tuple[str, Stash | None, str]]) -> None:
        """Settle patched users: (user id, the stash as read, 'done' | 'refresh' | 'retry'); see FINISH_PATCH_LUA."""
        if not actions:
            return
        args: list[str] = [contract.STASH_PREFIX]
        for user_id, stash, action in actions:
            args += [user_id, stash.raw if stash else "", action]
        self._finish_patch(keys=[contract.org_patch_key(org_id), contract.PENDING_REFRESH_KEY], args=args)

    def finish_org_patch(self, kind: str, org_id: str) -> None:
        self._finish_org_patch(
            keys=[contract.ORG_PATCHES_KEY, contract.org_patch_key(org_id)], args=[f"{kind}:{org_id}"]
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _acquired(reply: Any) -> tuple[Acquired, Any]:
    return Acquired(int(reply[0])), (reply[1] if len(reply) > 1 else None)
