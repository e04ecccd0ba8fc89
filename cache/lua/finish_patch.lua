-- finish_patch.lua: settle users after the worker patched their stashed values.
--
-- Run by the worker after a patch pass over an org's stashed members. A user whose stash
-- changed since the worker read it (a newer event re-stashed them) stays listed for the next
-- pass whatever the action, so no event is lost to a patch that started before it.
--
-- KEYS[1]  clerk-org-cache:org-patch:<orgId>   set of the org's users waiting for a patch
-- KEYS[2]  clerk-org-cache:pending-refresh     set of users waiting for a full re-read
--
-- ARGV[1]  stash prefix 'user-orgs-stash:'
-- ARGV[2..] per user, three values: user id, the stash as read ('' if none), action:
--   'done'    forget the user (patched, already refilled, or no stash left to patch)
--   'refresh' forget the user, and re-read them in full instead
--   'retry'   keep the user listed: an event voided this patch, the next pass patches afresh
--
-- Reply: 1

for i = 2, #ARGV, 3 do
  local uid, seen, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = ARGV[1] .. uid
  local current = redis.call('GET', key) or ''
  if action ~= 'retry' and current == seen then
    if seen ~= '' then redis.call('DEL', key) end
    redis.call('SREM', KEYS[1], uid)
    if action == 'refresh' then redis.call('SADD', KEYS[2], uid) end
  end
end
return 1
