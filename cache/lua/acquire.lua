-- acquire.lua: answer a cache miss with the value, a lease to fill it, or "wait".
--
-- Run by every lookup that missed, BEFORE it calls Clerk. If a value appeared meanwhile it
-- is a hit. Otherwise the caller gets a lease: its random token, stored in
-- user-orgs-lease:<userId> together with the change sequence at grant time. Any
-- invalidation deletes the lease, and fill.lua stores only while the caller's token is still
-- there and none of the value's orgs changed after the grant, so a Clerk read that began
-- before a change can never store its pre-change answer (Facebook's memcache leases).
-- While one caller holds the lease, others get "wait" and poll (single-flight) instead of
-- all calling Clerk.
--
-- KEYS[1]  user-orgs:<userId>            the cached value
-- KEYS[2]  user-orgs-lease:<userId>      the lease, '<token> <change sequence at grant> <grant time, ms>'
-- KEYS[3]  clerk-org-cache:change-seq    the global sequence of org changes (see record.lua)
--
-- ARGV[1]  a new random token, unique to this call (cache/protocol.py: new_token)
-- ARGV[2]  the lease lifetime in ms, 1 .. 60000 (MAX_LEASE_MS in cache/protocol.py; enforced here): the
--          longest a fill may take from acquire to fill. It must stay below the 120 s an org change is
--          remembered (record.lua), or a slow first fill could pass fill.lua's org-change check
-- ARGV[3]  '1' to take the lease even from another caller (the worker: the holder may have died;
--          a live holder's fill is then refused, and waiters get the worker's fill instead), else '0'
--
-- Reply: {1, value}  hit: the cached value, nothing else done
--        {2, token}  lease granted (ARGV[1]): read Clerk, then run fill.lua with this token,
--                    or release.lua if the Clerk call failed
--        {3}         another caller holds the lease: poll briefly, then answer from Clerk without storing
--        an error    ARGV[2] outside 1 .. 60000
--
-- The grant time (server clock) is kept in the lease: fill.lua makes the value expire
-- USER_ORGS_TTL_SECONDS after it, so no value outlives the Clerk read it carries by more than that.

local lifetime = tonumber(ARGV[2])
if not lifetime or lifetime < 1 or lifetime > 60000 then
  return redis.error_reply('ERR lease lifetime must be 1 to 60000 ms')
end
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
local seq = redis.call('GET', KEYS[3]) or '0'
local now = redis.call('TIME')
local lease = ARGV[1] .. ' ' .. seq .. ' ' .. (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], lease, 'PX', ARGV[2])
  return {2, ARGV[1]}
end
if redis.call('SET', KEYS[2], lease, 'NX', 'PX', ARGV[2]) then return {2, ARGV[1]} end
return {3}
