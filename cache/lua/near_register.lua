-- near_register.lua: register, or renew, one process's near-cache under a lease (see cache/near.py).
--
-- A near-cache serves in-process hits only while the lease it last renewed stands by its own
-- clock, counted from when the renewal was sent (so it ends before this script's lease does).
-- The intake publishes every invalidation to each registered id (near_publish.lua) and waits
-- for its acknowledgement or its lease, so an id must be registered here before it serves.
-- Each id counts the invalidations published to it; a renewal returns the count, and the
-- process extends its lease only once it has handled that many, so a message lost on the way
-- (a dropped or half-open subscription) makes its lease lapse instead of being missed.
-- A process that emptied its tier (after any error) registers again under a new id, passing
-- the old one, which is dropped here: the intake need not wait out the old lease.
--
-- KEYS[1]  clerk-org-cache:near-caches    sorted set: id -> lease end (Unix ms, Redis's clock)
-- KEYS[2]  clerk-org-cache:near-seq       hash: id -> how many invalidations were published to it
-- KEYS[3]  clerk-org-cache:near-lease-ms  hash: id -> its lease length in ms
-- KEYS[4]  clerk-org-cache:near-born      when the first registration of this data set was written (Unix ms,
--                                         kept for ever): a revoker that saw another value knows Redis lost
--                                         its registrations, and waits out any lease they may have held
--
-- ARGV[1]  the id (the channel clerk-org-cache:near-inval:<id> must already be subscribed)
-- ARGV[2]  the lease length L in ms (500 to 5000)
-- ARGV[3]  'new': the first registration of this id, its count starts at 0 | 'renew'
-- ARGV[4]  with 'new': the id the process held before, to drop, or ''
--
-- Reply: {now_ms, seq}
--   now_ms  Redis's clock (TIME) in Unix ms
--   seq     the invalidations published to the id so far; -1: refused, a renewal of an id whose
--           lease had lapsed by Redis's clock, or that is not registered (the process empties its
--           tier and registers again under a new id)

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if not lease or lease < 500 or lease > 5000 then return redis.error_reply('ERR near lease must be 500..5000 ms') end
if ARGV[3] == 'new' then
  if ARGV[4] and ARGV[4] ~= '' then
    redis.call('ZREM', KEYS[1], ARGV[4])
    redis.call('HDEL', KEYS[2], ARGV[4])
    redis.call('HDEL', KEYS[3], ARGV[4])
  end
  redis.call('SET', KEYS[4], now, 'NX')
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], 0)
  redis.call('HSET', KEYS[3], ARGV[1], lease)
  return {now, 0}
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return {now, -1} end
redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], lease)
return {now, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')}
