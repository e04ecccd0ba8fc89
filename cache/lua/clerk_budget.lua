-- clerk_budget.lua: take one request from the Clerk budget that every process of the fleet shares.
--
-- Clerk limits each instance (1,000 requests / 10 s in production, 100 on development instances)
-- and answers 429 beyond. Every process draws from one moving window kept here, so the fleet stays
-- under the limit in any window, whatever Clerk's own window alignment. Interactive calls (a user
-- is waiting) may use the whole budget; re-warming only what leaves the reserve, and none while an
-- interactive caller is waiting for a slot. After a 429 anywhere, nobody calls until Retry-After.
--
-- KEYS[1]  clerk-org-cache:clerk-budget               sorted set: one member per request in the window, scored by its time (ms)
-- KEYS[2]  clerk-org-cache:clerk-paused-until         Unix ms before which nobody calls Clerk (set after a 429)
-- KEYS[3]  clerk-org-cache:clerk-interactive-waiting  present while an interactive caller waits for a slot
--
-- ARGV[1]  'i' interactive or 'r' re-warm
-- ARGV[2]  requests allowed per window (the budget)
-- ARGV[3]  the window in ms (10000 for Clerk's)
-- ARGV[4]  the reserve: slots re-warming leaves for interactive calls
-- ARGV[5]  a member name unique to this request
--
-- Reply: {1, 0}        granted: call Clerk now
--        {0, wait_ms}  refused: try again after wait_ms (the pause's end, or when a slot frees)

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit = tonumber(ARGV[3]), tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now_ms then return {0, paused - now_ms} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
local used = redis.call('ZCARD', KEYS[1])
local cap = limit
if ARGV[1] == 'r' then
  if redis.call('EXISTS', KEYS[3]) == 1 then return {0, 25} end
  cap = limit - tonumber(ARGV[4])
end
if used < cap then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
if ARGV[1] == 'i' then redis.call('SET', KEYS[3], '1', 'PX', 250) end
-- the slot this caller may get: when enough of the oldest requests have left the window
local oldest = redis.call('ZRANGE', KEYS[1], used - cap, used - cap, 'WITHSCORES')
local wait = 1
if oldest[2] then wait = math.max(1, tonumber(oldest[2]) + window - now_ms) end
return {0, wait}
