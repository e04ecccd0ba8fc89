-- take_pending.lua: pop users to refresh into one drain job's own set, remembering them until done.
--
-- Run by a drain job. The users taken move from the pending set to the job's refreshing set,
-- and the job removes them from it once refreshed. While the job runs it renews its lease
-- (clerk-org-cache:drain:<jobId>); if its worker dies, the lease expires and recover_drains.lua
-- puts the job's users back into the pending set, so a killed job loses none, and users a live
-- concurrent job is refreshing are never taken from it.
--
-- KEYS[1]  clerk-org-cache:pending-refresh          set of users waiting for a full re-read
-- KEYS[2]  clerk-org-cache:refreshing:<jobId>       set of users this drain job has taken and not finished
-- KEYS[3]  clerk-org-cache:drains                   set of drain job ids that may hold taken users
--
-- ARGV[1]  how many users to take at most
-- ARGV[2]  the drain job's id
--
-- Reply: the user ids taken (an empty array when none is pending)

local users = redis.call('SPOP', KEYS[1], ARGV[1])
if #users > 0 then
  redis.call('SADD', KEYS[2], unpack(users))
  redis.call('SADD', KEYS[3], ARGV[2])
end
return users
