-- clerk_budget.lua: take one request from the Clerk budget that every process of the fleet shares.
--
-- Clerk limits each instance (1,000 requests / 10 s in production, 100 on development instances)
-- and answers 429 beyond. Every process draws from one moving window kept here, so the fleet stays
-- under the limit in any window, whatever Clerk's own window alignment. After a 429 anywhere,
-- nobody calls until Retry-After.
--
-- Interactive calls (a user is waiting) may use the whole budget. Re-warming gets the rest, as a
-- rate, never as a burst: its share of a window is what the budget leaves after the interactive
-- calls of the last window and a headroom (the larger of the reserve and a quarter of those calls),
-- and it is paced evenly over the window (a cell-rate limiter with a burst of 2 % of the share;
-- a slot due within 100 ms is booked at once, and counts in the window from its booking).
-- So the window never fills with re-warming taken at its start that only ages out at its end: a
-- slot frees every window/share, and none goes to re-warming while an interactive caller waits.
--
-- KEYS[1]  clerk-org-cache:clerk-budget               sorted set: one member per request in the window, scored by its time (ms)
-- KEYS[2]  clerk-org-cache:clerk-paused-until         Unix ms before which nobody calls Clerk (set after a 429)
-- KEYS[3]  clerk-org-cache:clerk-interactive-waiting  present while an interactive caller waits for a slot
-- KEYS[4]  clerk-org-cache:clerk-budget-interactive   sorted set: the interactive requests among KEYS[1]
-- KEYS[5]  clerk-org-cache:clerk-rewarm-next          Unix ms (fractional) at which re-warming's pace allows its next request
--
-- ARGV[1]  'i' interactive or 'r' re-warm
-- ARGV[2]  requests allowed per window (the budget)
-- ARGV[3]  the window in ms (10000 for Clerk's)
-- ARGV[4]  the reserve: slots re-warming always leaves for interactive calls
-- ARGV[5]  a member name unique to this request
--
-- Reply: {1, 0}        granted: call Clerk now
--        {1, delay_ms} granted (re-warm only): call Clerk in delay_ms, the slot booked for then
--        {0, wait_ms}  refused: try again after wait_ms (the pause's end, a slot's release, re-warming's pace)

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit, reserve = tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[4])
local BOOK_MS = 100  -- how far ahead re-warming may book its next slot
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now_ms then return {0, paused - now_ms} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now_ms - window)
local used = redis.call('ZCARD', KEYS[1])

local function grant()
  redis.call('ZADD', KEYS[1], now_ms, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], window + BOOK_MS)
end

-- the wait until enough of the oldest requests have left the window for one more under cap
local function wait_for_slot(cap)
  local oldest = redis.call('ZRANGE', KEYS[1], used - cap, used - cap, 'WITHSCORES')
  if oldest[2] then return math.max(1, tonumber(oldest[2]) + window - now_ms) end
  return 1
end

if ARGV[1] == 'i' then
  if used < limit then
    grant()
    redis.call('ZADD', KEYS[4], now_ms, ARGV[5])
    redis.call('PEXPIRE', KEYS[4], window + BOOK_MS)
    return {1, 0}
  end
  redis.call('SET', KEYS[3], '1', 'PX', 250)
  return {0, wait_for_slot(limit)}
end

if redis.call('EXISTS', KEYS[3]) == 1 then return {0, 25} end
local interactive = redis.call('ZCARD', KEYS[4])
local headroom = math.max(reserve, math.ceil(interactive / 4))
local cap = limit - headroom  -- the window may hold this many requests before re-warming stops
if cap < 1 then return {0, 250} end
if used >= cap then return {0, wait_for_slot(cap)} end
local share = cap - interactive  -- re-warming's requests per window, at the interactive rate just seen
if share < 1 then return {0, 250} end  -- interactive demand takes the whole budget: look again shortly
local interval = window / share
local burst = math.max(1, math.floor(share / 50)) * interval
local next_ms = tonumber(redis.call('GET', KEYS[5]) or '0')
if next_ms < now_ms then next_ms = now_ms end
-- the pace's next slot, booked now if it starts within BOOK_MS: the caller sleeps until then and asks
-- nothing more, so waiting re-warm callers do not poll Redis once per interval each
local at_ms = math.max(now_ms, math.ceil(next_ms - burst))
if at_ms - now_ms > BOOK_MS then return {0, at_ms - now_ms - BOOK_MS} end
redis.call('ZADD', KEYS[1], at_ms, ARGV[5])
redis.call('PEXPIRE', KEYS[1], window + BOOK_MS)
redis.call('SET', KEYS[5], string.format('%.2f', next_ms + interval), 'PX', window)
return {1, at_ms - now_ms}
