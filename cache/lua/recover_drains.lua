-- recover_drains.lua: give the users of drain jobs whose worker died back to the pending set.
--
-- A running drain job renews clerk-org-cache:drain:<jobId> (a short-lived lease) from a
-- heartbeat thread. A job whose lease is gone has stopped: its worker was killed, or it ended
-- without finishing some users. Its taken users go back to the pending set for the next drain;
-- users of jobs whose lease is alive are left alone.
--
-- KEYS[1]  clerk-org-cache:drains            set of drain job ids that may hold taken users
-- KEYS[2]  clerk-org-cache:pending-refresh   set of users waiting for a full re-read
--
-- ARGV[1]  clerk-org-cache:drain:            prefix of the per-job lease keys
-- ARGV[2]  clerk-org-cache:refreshing:       prefix of the per-job sets of taken users
--
-- Reply: {jobs recovered, users put back, drain jobs whose lease is alive}

local recovered, users, alive = 0, 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    alive = alive + 1
  else
    local taken = ARGV[2] .. id
    users = users + redis.call('SCARD', taken)
    redis.call('SUNIONSTORE', KEYS[2], KEYS[2], taken)
    redis.call('DEL', taken)
    redis.call('SREM', KEYS[1], id)
    recovered = recovered + 1
  end
end
return {recovered, users, alive}
