-- near_publish.lua: send one invalidation to every registered near-cache (see cache/near.py).
--
-- Run by whoever revoked (the intake, `invalidate`, the CLI) after its record.lua (and WAIT)
-- succeeded, and before it answers: it then waits until each listed id has acknowledged (an
-- RPUSH of the id to clerk-org-cache:near-acks:<token>) or until that id's lease, L ms counted
-- from this reply, plus a margin, has passed on its own clock, since by then the process has
-- stopped serving by itself. Each listed id's count of invalidations is incremented and sent in
-- its message, so the process notices one it never got.
-- A registration that lapsed by less than the grace (by Redis's clock) is still listed, so that a
-- forward step of Redis's clock smaller than that cannot drop a live process from the list; one
-- lapsed by more than the forget time is removed.
--
-- KEYS[1]  clerk-org-cache:near-caches    sorted set: id -> lease end (Unix ms, Redis's clock)
-- KEYS[2]  clerk-org-cache:near-seq       hash: id -> how many invalidations were published to it
-- KEYS[3]  clerk-org-cache:near-lease-ms  hash: id -> its lease length in ms
-- KEYS[4]  clerk-org-cache:near-born      when the first registration of this data set was written (Unix ms)
--
-- ARGV[1]  the channel prefix 'clerk-org-cache:near-inval:' (the channel is the prefix and the id)
-- ARGV[2]  the invalidation's token (hex): the acknowledgements go to clerk-org-cache:near-acks:<token>
-- ARGV[3]  the grace in ms (NEAR_LISTING_GRACE_MS)
-- ARGV[4]  the forget time in ms (NEAR_FORGET_MS)
-- ARGV[5]  what to drop, as JSON: an array of user ids, or "*" (the whole tier)
-- ARGV[6]  '1': stamp KEYS[4] now if it is missing (a revoker that has seen a stamp before: this data set
--          is then known by a stamp of its own, so that a second loss of it is seen too), else '0'
--
-- Each message is the JSON {"token": <ARGV[2]>, "seq": <the id's new count>, "users": <ARGV[5]>}.
--
-- Reply: {now_ms, {id, lease_ms, receivers, id, lease_ms, receivers, ...}, born}
--   now_ms     Redis's clock (TIME) in Unix ms
--   born       KEYS[4]'s value (after ARGV[6]'s stamp), or -1 when there is none: a revoker that saw a value
--              before and gets another one (or none) knows the registry was lost, and waits out the longest lease
--   receivers  what PUBLISH returned for that id (0: its subscription is gone; it will lapse)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[4])))) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
local listed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[3])), '+inf')) do
  local seq = redis.call('HINCRBY', KEYS[2], id, 1)
  local lease = tonumber(redis.call('HGET', KEYS[3], id) or '5000')
  local message = '{"token":"' .. ARGV[2] .. '","seq":' .. seq .. ',"users":' .. ARGV[5] .. '}'
  local receivers = redis.call('PUBLISH', ARGV[1] .. id, message)
  table.insert(listed, id)
  table.insert(listed, lease)
  table.insert(listed, receivers)
end
if ARGV[6] == '1' then redis.call('SET', KEYS[4], now, 'NX') end
return {now, listed, tonumber(redis.call('GET', KEYS[4]) or '-1')}
