-- release.lua: give a lease back after a failed Clerk call.
--
-- Deletes the lease only while it is still the caller's, so callers waiting on it can take
-- it at once instead of waiting out its lifetime; a lease someone else took over is left alone.
--
-- KEYS[1]  user-orgs-lease:<userId>   the lease acquire.lua granted
--
-- ARGV[1]  the token acquire.lua granted
--
-- Reply: 1 released | 0 the lease was gone or no longer the caller's

local lease = redis.call('GET', KEYS[1])
if lease and string.sub(lease, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then return redis.call('DEL', KEYS[1]) end
return 0
