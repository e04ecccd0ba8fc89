-- acquire_patch.lua: the worker's org patch takes a member's lease and reads the member's stash, atomically.
--
-- An org event (record.lua) moves each cached member's value aside into a stash; the worker
-- patches the org's details into it and writes it back with fill.lua. Taking the lease and
-- reading the stash in one step matters: if another org event re-stashed the value between
-- the two, the patch would settle (finish_patch.lua) against the newer stash it never
-- patched, and that second patch would be lost. Like acquire.lua with take-over: a live
-- holder's fill is then refused.
--
-- KEYS[1]  user-orgs:<userId>             the cached value
-- KEYS[2]  user-orgs-lease:<userId>       the lease, '<token> <change sequence at grant> <grant time, ms>'
-- KEYS[3]  clerk-org-cache:change-seq     the global sequence of org changes
-- KEYS[4]  user-orgs-stash:<userId>       the stash, '<orgId> <value>'
--
-- ARGV[1]  a new random token
-- ARGV[2]  the lease lifetime in ms, 1 .. 60000
--
-- Reply: {1, stash or nil, stash expiry}  a value is cached already: nothing to patch; no lease taken
--        {2, stash or nil, stash expiry}  lease granted (ARGV[1]): patch the stash, then fill.lua
--                                         with the stash's expiry (Unix ms; -2 when there is no stash)

local lifetime = tonumber(ARGV[2])
if not lifetime or lifetime < 1 or lifetime > 60000 then
  return redis.error_reply('ERR lease lifetime must be 1 to 60000 ms')
end
local stash = redis.call('GET', KEYS[4])
local expire_at = redis.call('PEXPIRETIME', KEYS[4])
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, stash, expire_at} end
local seq = redis.call('GET', KEYS[3]) or '0'
local now = redis.call('TIME')
local granted = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. seq .. ' ' .. granted, 'PX', ARGV[2])
return {2, stash, expire_at}
