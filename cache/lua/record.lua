#!lua flags=allow-oom
-- record.lua: record one webhook event: dedupe it, invalidate what it changed, queue the refreshes.
--
-- Run by the intake before it answers 2xx, all in one round trip, so revocation never waits
-- for a worker. allow-oom: a full Redis must still accept revocations (the writes below are tiny).
-- Each affected value and its lease are deleted (which voids any fill in flight), and users
-- that were cached are queued for the worker to re-read. For an org event, every cached member
-- (from the index org-users:<orgId>) has its value moved aside into a stash
-- user-orgs-stash:<userId> (never served) for the worker to patch from one Clerk read of the
-- org; and since a user whose first fill is still running is not in the index yet, the org is
-- stamped clerk-org-cache:org-changed:<orgId> with a new change sequence, which fill.lua
-- checks against the sequence its lease was granted at. A role event does the same for every
-- cached holder of the role (from role-users:<roleKey>), stashed for one patch from Clerk's role
-- list, and stamps clerk-org-cache:roles-changed so that no fill in flight stores a permission
-- set read before it.
--
-- KEYS[1]  clerk-org-cache:pending-refresh   set of users waiting for a full re-read
-- KEYS[2]  clerk-org-cache:drain-scheduled   marker: a drain job is already queued
-- KEYS[3]  clerk-org-cache:change-seq        the global sequence of org changes
-- KEYS[4]  clerk-org-cache:org-patches       set of pending patches, 'o:<orgId>' / 'x:<orgId>' / 'r:<roles tag>'
-- KEYS[5]  clerk-org-cache:roles-changed     change sequence of the last role or permission event
-- KEYS[6]  clerk-org-cache:roles-indexed     set of the role keys that have an index role-users:<roleKey>
-- KEYS[7]  clerk-webhook:seen:<svixId>       optional: dedupe on the Svix message id (omit to always apply)
--
-- The keys of users and orgs named by the targets are derived here from these prefixes:
-- ARGV[1]  seen-event lifetime in s (SEEN_EVENT_TTL_S: longer than Svix's retry schedule)
-- ARGV[2]  drain-marker lifetime in s (DRAIN_MARKER_TTL_S: after it, a lost enqueue is made up for)
-- ARGV[3]  value prefix        'user-orgs:'
-- ARGV[4]  lease prefix        'user-orgs-lease:'
-- ARGV[5]  org index prefix    'org-users:'
-- ARGV[6]  org-changed prefix  'clerk-org-cache:org-changed:'
-- ARGV[7]  org-changed lifetime in ms (ORG_CHANGED_MS: longer than any lease)
-- ARGV[8]  stash prefix        'user-orgs-stash:'
-- ARGV[9]  org-patch prefix    'clerk-org-cache:org-patch:'
-- ARGV[10] role index prefix   'role-users:'
-- ARGV[11] the role patch's tag 'roles' (its stash tag, and the id of its patch: never an org id)
-- ARGV[12..] targets, any number:
--   'u:<userId>' invalidate, refresh later if it was cached      'd:<userId>' invalidate, never refresh
--   'o:<orgId>'  org updated: move every cached member's value aside (a stash, never served) for the
--                worker to patch from one Clerk read; void every fill in flight that read the org
--   'x:<orgId>'  org deleted: same, the patch drops the org; then drop the index
--   'm:<orgId>'  re-read every cached member in full (a membership event naming no user, an operator's
--                invalidate-org): 'u:' for each, and void fills in flight that read the org
--   'r:<roleKey>' role changed: move every cached holder's value aside for the worker to patch from
--                one read of Clerk's role list; void every fill in flight
--   'R:*'        any role may have changed (role.deleted, permission.*: they name an id only): 'r:' for
--                every indexed role
-- (the constants named are in cache/protocol.py; the key names in cache/contract.py and the README)
--
-- Reply: {recorded, invalidated, schedule}
--   recorded     1 recorded | 0 duplicate: KEYS[7] was already there, nothing invalidated again
--   invalidated  how many values (or stashes) were deleted or moved aside
--   schedule     1 if the caller must enqueue a drain job, else 0; decided for duplicates too,
--                so a retried call still gets the job enqueued

local recorded = 1
if #KEYS >= 7 and not redis.call('SET', KEYS[7], '1', 'NX', 'EX', ARGV[1]) then
  recorded = 0
  -- a duplicate still writes (the record's expiry), so a WAIT after it covers the first delivery's writes:
  -- replication is one ordered stream
  redis.call('EXPIRE', KEYS[7], ARGV[1])
end
local invalidated = 0
local function invalidate(uid, refresh)
  local existed = redis.call('DEL', ARGV[3] .. uid, ARGV[8] .. uid)
  redis.call('DEL', ARGV[4] .. uid)
  invalidated = invalidated + existed
  if refresh and existed > 0 then redis.call('SADD', KEYS[1], uid) end
end
-- returns false when the user has neither a value nor a stash (nothing to patch)
local function stash(uid, org)
  redis.call('DEL', ARGV[4] .. uid)
  local value = redis.call('GET', ARGV[3] .. uid)
  if value then
    local ttl = redis.call('PTTL', ARGV[3] .. uid)
    -- the stash keeps the value's absolute expiry (a relative PTTL/PX copy can drift by a ms);
    -- PEXPIRETIME needs Redis 7, and Redis 6.2 takes the relative copy
    local has_at, expire_at = pcall(redis.call, 'PEXPIRETIME', ARGV[3] .. uid)
    redis.call('DEL', ARGV[3] .. uid)
    invalidated = invalidated + 1
    if ttl > 0 then
      if has_at and type(expire_at) == 'number' and expire_at > 0 then
        redis.call('SET', ARGV[8] .. uid, org .. ' ' .. value, 'PXAT', expire_at)
      else
        redis.call('SET', ARGV[8] .. uid, org .. ' ' .. value, 'PX', ttl)
      end
      redis.call('SADD', ARGV[9] .. org, uid)
    else
      redis.call('SADD', KEYS[1], uid)  -- a value written without a TTL: refresh in full
    end
    return true
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
    return true
  end
  return false
end
local function repatch_role(role)
  local index = ARGV[10] .. role
  for _, uid in ipairs(redis.call('SMEMBERS', index)) do
    if not stash(uid, ARGV[11]) then redis.call('SREM', index, uid) end  -- gone: the next fill indexes it again
  end
end
if recorded == 1 then
  for i = 12, #ARGV do
    local kind, id = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 3)
    if kind == 'r' or kind == 'R' then
      -- a fill in flight may hold any role (its user is not in an index yet): void them all
      redis.call('SET', KEYS[5], redis.call('INCR', KEYS[3]), 'PX', ARGV[7])
      if kind == 'r' then
        repatch_role(id)
      else
        for _, role in ipairs(redis.call('SMEMBERS', KEYS[6])) do repatch_role(role) end
      end
      if redis.call('EXISTS', ARGV[9] .. ARGV[11]) == 1 then redis.call('SADD', KEYS[4], 'r:' .. ARGV[11]) end
    elseif kind == 'u' then
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
