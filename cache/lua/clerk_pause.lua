-- clerk_pause.lua: after a 429 from Clerk, pause every process's Clerk calls until Retry-After.
--
-- Extends the fleet's pause, never shortens it; clerk_budget.lua refuses every request until then.
--
-- KEYS[1]  clerk-org-cache:clerk-paused-until   Unix ms before which nobody calls Clerk
--
-- ARGV[1]  the pause in ms (Clerk's Retry-After)
--
-- Reply: the Unix ms the pause now lasts until (this call's, if it was the longer)

local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < until_ms then
  redis.call('SET', KEYS[1], until_ms, 'PX', ARGV[1])
  return until_ms
end
return current
