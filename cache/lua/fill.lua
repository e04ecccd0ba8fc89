-- fill.lua: store a value read from Clerk, only if the caller's lease still stands.
--
-- The second half of acquire.lua. The value is refused (nothing stored) when an
-- invalidation deleted the lease, another caller took it over, or one of the orgs in the
-- value changed (record.lua stamps clerk-org-cache:org-changed:<orgId>) after the lease was
-- granted: in each case the Clerk read may predate the change. Once the token matched, the
-- lease is deleted whether or not the value is stored. A stored value also puts the user in
-- each of its orgs' index org-users:<orgId>, whose TTL is kept beyond the value's so that an
-- org event always finds every cached member.
--
-- With n the number of distinct orgs in the value (0 for a user in no org):
-- KEYS[1]            user-orgs:<userId>                     where the value goes
-- KEYS[2]            user-orgs-lease:<userId>               the lease acquire.lua granted
-- KEYS[3 .. 2+n]     org-users:<orgId>, one per org in the value
-- KEYS[3+n .. 2+2n]  clerk-org-cache:org-changed:<orgId>, the same orgs in the same order
--
-- ARGV[1]  the token acquire.lua granted
-- ARGV[2]  the value: the JSON array that cache/contract.py and the README define
-- ARGV[3]  the value's lifetime in ms, counted from the lease's grant (before the Clerk read began)
-- ARGV[4]  the user id (added to each org index)
-- ARGV[5]  optional: an absolute expiry (Unix ms) instead; the worker's org patch passes the stash's,
--          so patching never extends how long memberships go unread
--
-- Reply: 1 stored | 0 refused: an invalidation voided the lease, another caller took it over,
--        or one of the orgs changed since it was granted, or the value would already have expired

local lease = redis.call('GET', KEYS[2])
if not lease then return 0 end
local token, seq, granted_ms = string.match(lease, '^(%S+) (%S+) ?(%S*)$')
if token ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local granted_at = tonumber(seq)
local n = (#KEYS - 2) / 2
for i = 3 + n, 2 + 2 * n do
  local changed = redis.call('GET', KEYS[i])
  if changed and tonumber(changed) > granted_at then return 0 end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expire_at = tonumber(ARGV[5] or '')
if not expire_at then expire_at = (tonumber(granted_ms) or now_ms) + tonumber(ARGV[3]) end
if expire_at <= now_ms then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', expire_at)
-- the org index must outlive every value it points at, whatever TTL other writers use
local index_ttl = math.floor((expire_at - now_ms + 999) / 1000) + 60
for i = 3, 2 + n do
  redis.call('SADD', KEYS[i], ARGV[4])
  if redis.call('TTL', KEYS[i]) < index_ttl then redis.call('EXPIRE', KEYS[i], index_ttl) end
end
return 1
