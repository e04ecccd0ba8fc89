-- take_pending.lua: pop users to refresh, remembering them until done.
--
-- Run by a drain job. The users taken move from the pending set to the refreshing set, and
-- the job removes them from it once refreshed, so a worker killed mid-job loses none (the next
-- drain puts the refreshing set back into the pending one).
--
-- KEYS[1]  clerk-org-cache:pending-refresh   set of users waiting for a full re-read
-- KEYS[2]  clerk-org-cache:refreshing        set of users a drain job has taken and not finished
--
-- ARGV[1]  how many users to take at most
--
-- Reply: the user ids taken (an empty array when none is pending)

local users = redis.call('SPOP', KEYS[1], ARGV[1])
if #users > 0 then redis.call('SADD', KEYS[2], unpack(users)) end
return users
