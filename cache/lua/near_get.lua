-- near_get.lua: a user's value and its remaining lifetime, read at one instant (see cache/near.py).
--
-- A near-cache keeps a value read from Redis until the value's own expiry, converted to its local
-- clock from the PTTL read here; GET and PTTL in one script cannot straddle a write.
--
-- KEYS[1]  user-orgs:<userId>
--
-- ARGV[1]  none: the script takes no arguments
--
-- Reply: {value, pttl}: the value (nil when there is none) and its PTTL in ms (-2 none, -1 no expiry)

local value = redis.call('GET', KEYS[1])
if not value then return {false, -2} end
return {value, redis.call('PTTL', KEYS[1])}
