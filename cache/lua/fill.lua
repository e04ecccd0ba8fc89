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
-- Role changes work the same way: the value's users go into role-users:<roleKey> for each role
-- in it (the roles are listed in clerk-org-cache:roles-indexed, for an event that names no role),
-- and a role or permission event stamps clerk-org-cache:roles-changed, which voids every fill
-- whose lease predates it (role events are rare: refusing all fills in flight is cheap and exact).
--
-- With n the number of distinct orgs in the value (0 for a user in no org), m of distinct roles:
-- KEYS[1]                user-orgs:<userId>                     where the value goes
-- KEYS[2]                user-orgs-lease:<userId>               the lease acquire.lua granted
-- KEYS[3]                clerk-org-cache:roles-changed          change sequence of the last role or permission event
-- KEYS[4]                clerk-org-cache:roles-indexed          set of the role keys that have an index
-- KEYS[5 .. 4+n]         org-users:<orgId>, one per org in the value
-- KEYS[5+n .. 4+2n]      clerk-org-cache:org-changed:<orgId>, the same orgs in the same order
-- KEYS[5+2n .. 4+2n+m]   role-users:<roleKey>, one per role in the value
--
-- ARGV[1]  the token acquire.lua granted
-- ARGV[2]  the value: the JSON array that cache/contract.py and the README define
-- ARGV[3]  the value's lifetime in ms, counted from the lease's grant (before the Clerk read began)
-- ARGV[4]  the user id (added to each org and role index)
-- ARGV[5]  an absolute expiry (Unix ms) instead, or '': the worker's patches pass the stash's,
--          so patching never extends how long memberships go unread
-- ARGV[6]  n, the number of orgs
-- ARGV[7 .. 6+m]  the role keys, in the order of their index keys
--
-- Reply: 1 stored | 0 refused: an invalidation voided the lease, another caller took it over,
--        one of the orgs or any role changed since it was granted, or the value would already have expired

local lease = redis.call('GET', KEYS[2])
if not lease then return 0 end
local token, seq, granted_ms = string.match(lease, '^(%S+) (%S+) ?(%S*)$')
if token ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local granted_at = tonumber(seq)
local n = tonumber(ARGV[6])
local roles_changed = redis.call('GET', KEYS[3])
if roles_changed and tonumber(roles_changed) > granted_at then return 0 end
for i = 5 + n, 4 + 2 * n do
  local changed = redis.call('GET', KEYS[i])
  if changed and tonumber(changed) > granted_at then return 0 end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expire_at = tonumber(ARGV[5] or '')
if not expire_at then expire_at = (tonumber(granted_ms) or now_ms) + tonumber(ARGV[3]) end
if expire_at <= now_ms then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', expire_at)
-- the org and role indexes must outlive every value they point at, whatever TTL other writers use
local index_ttl = math.floor((expire_at - now_ms + 999) / 1000) + 60
local function index(key, member)
  redis.call('SADD', key, member)
  if redis.call('TTL', key) < index_ttl then redis.call('EXPIRE', key, index_ttl) end
end
for i = 5, 4 + n do index(KEYS[i], ARGV[4]) end
for i = 5 + 2 * n, #KEYS do
  index(KEYS[i], ARGV[4])
  index(KEYS[4], ARGV[7 + i - (5 + 2 * n)])
end
return 1
